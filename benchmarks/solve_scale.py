"""How the planner scales with blocks and states, in one run: 12, 16, 24 and 32 blocks x 7 states.

Per size: one device class (solve_device, cold: a new planner), the whole frontier where it is still built
(rows, the most partial rows after a block, build time), and a fleet of device classes x 3 candidate models
(n/2, 2n/3 and n blocks, solve_fleet, cold). Then the growth exponent of each time over the block count (a
least-squares slope of log time on log blocks), and the 5-state fleet of issue 11 (6, 8, 12 blocks, 1,000
classes) as a regression check.

Synthetic profiles: budgetplan.testing.make_transformer_profile (BERT-style blocks at real scale: hidden 384,
batch 16, sequence 128, fp32, Adam; states frozen_outside, frozen_in_path, trained, lora-4, lora-8) with the
+recompute variants of the trainable states (testing.with_recompute), 7 states a block besides frozen_outside.
Budgets are drawn (seeded) around the bundled device classes: memory 0.25-8 GiB, sustained 2-300 GFLOP/s,
uplink 1-50 Mbit/s, round deadline 60-600 s, upload time 10-120 s, 64-512 samples per round.

Every time is measured in this process, wall (perf_counter) and this process's CPU time (process_time, less
sensitive to other processes on a shared machine); the load is os.getloadavg() when taken. Where a fleet plans
per class (its largest model's frontier would pass the row limit), only the first --fleet-classes classes are
timed and the time for all CLASSES is extrapolated from the mean per class (marked derived).

Baselines are recorded, not re-run here (RECORDED): the planner before issue 22 and the per-class CP-SAT path
before the frontier, both at commit BASELINE_COMMIT. benchmarks/pinned_baseline.py re-measures them from that
commit's own code (git archive into a temporary folder).
Run: PYTHONPATH=src .venv/bin/python benchmarks/solve_scale.py [--sizes 12 16 24 32] [--fleet-classes N]
"""

from __future__ import annotations

import argparse
import math
import os
import random
import time

from budgetplan.devices import DeviceClass
from budgetplan.solve import Fleet, FleetClass, solve_device, solve_fleet
from budgetplan.solve.frontier import build_frontier
from budgetplan.solve.objective import make_objective
from budgetplan.testing import make_transformer_profile, with_recompute

CLASSES, SEED, FLEET_SUBSET = 1000, 0, 40
WHOLE_FLEET_UP_TO = 32  # blocks: above, only a subset of the classes is timed (each planned per class)
FRONTIER_UP_TO = 24  # blocks: the whole frontier is timed on its own up to here (the fleets build larger ones)
TARGETS = {"one class, 32 blocks": 0.2, "fleet, 32 blocks": 1.0, "fleet, 12 blocks": 0.25}
BASELINE_COMMIT = "5d23926"
# Measured at BASELINE_COMMIT on this project's 2-core machine (load ~1-5): docs/benchmarks.md, issue 22.
RECORDED = {
    "frontier build, 7 states (s)": {12: 2.2, 16: 23.0, 24: 302.0},
    "frontier rows, 7 states": {12: 1379, 16: 3117, 24: 10014},
    "fleet 6/8/12 blocks x 7 states, 1,000 classes, cold (s)": 2.604,
    "per-class CP-SAT path, fleet 6/8/12 blocks x 5 states, 1,000 classes (s wall / s CPU)": (41.14, 25.79),
}
FIELDS = ("memory_bytes", "total_memory_bytes", "flops_per_s", "uplink_bits_per_s", "round_deadline_s",
          "upload_time_budget_s", "samples_per_round")


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def random_device(rng: random.Random, index: int) -> DeviceClass:
    memory = int(_log_uniform(rng, 0.25, 8) * 2**30) // 2**20 * 2**20
    return DeviceClass(
        name=f"class-{index:04d}", description="synthetic benchmark class",
        memory_bytes=memory, total_memory_bytes=2 * memory,
        flops_per_s=float(round(_log_uniform(rng, 2e9, 3e11), -8)),
        uplink_bits_per_s=float(round(_log_uniform(rng, 1e6, 50e6), -5)),
        round_deadline_s=float(rng.choice((60, 120, 300, 600))),
        upload_time_budget_s=float(rng.choice((10, 30, 60, 120))),
        samples_per_round=rng.choice((64, 128, 256, 512)),
        sources=tuple(f"{f}: assumption: seeded random benchmark value" for f in FIELDS),
    )


def make_fleet(count: int) -> Fleet:
    rng = random.Random(SEED)
    return Fleet("benchmark", tuple(FleetClass(random_device(rng, i), 1 / count) for i in range(count)), (),
                 "<benchmark>")


def profile_of(blocks: int, recompute: bool = True):
    profile = make_transformer_profile(num_blocks=blocks, lora_ranks=(4, 8), name=f"bert-like-{blocks}")
    return with_recompute(profile) if recompute else profile


def load() -> str:
    return "load %.2f %.2f %.2f" % os.getloadavg()


def timed(call):
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def one_class(blocks: int) -> tuple[float, float]:
    profile, device = profile_of(blocks), make_fleet(1).classes[0].device
    solution, wall, cpu = timed(lambda: solve_device(profile, device))
    print(f"  one class ({device.name}; measured, {load()}): {wall:.3f} s wall / {cpu:.3f} s CPU, "
          f"{solution.status}, objective {solution.objective_value}, binding {solution.binding}")
    return wall, cpu


def frontier(blocks: int) -> None:
    if blocks > FRONTIER_UP_TO:
        print(f"  whole frontier: not timed alone above {FRONTIER_UP_TO} blocks (the fleet below builds it if it pays)")
        return
    profile = profile_of(blocks)
    built, wall, cpu = timed(lambda: build_frontier(profile, make_objective("layers", profile), row_limit=None))
    old = RECORDED["frontier build, 7 states (s)"].get(blocks)
    ratio = f"; recorded at {BASELINE_COMMIT}: {old} s, {old / wall:.1f}x (derived)" if old else ""
    print(f"  whole frontier (measured, {load()}): {len(built)} rows, {built.largest_partial_rows} partial rows at "
          f"most, {wall:.2f} s wall / {cpu:.2f} s CPU{ratio}")


def fleet(blocks: int, subset: int, recompute: bool = True) -> tuple[float, float]:
    """(cold wall, CPU) seconds for CLASSES classes, measured or extrapolated from `subset` of them (above
    WHOLE_FLEET_UP_TO blocks, where the largest model plans per class)."""
    sizes = (blocks // 2, 2 * blocks // 3, blocks)
    profiles = [profile_of(n, recompute) for n in sizes]
    whole = make_fleet(CLASSES)
    count = CLASSES if blocks <= WHOLE_FLEET_UP_TO else min(subset, CLASSES)
    part = Fleet("benchmark", whole.classes[:count], (), "<benchmark>")
    result, wall, cpu = timed(lambda: solve_fleet(profiles, part))
    rows = ", ".join(f"{c.profile.model.name}: " + (f"{c.frontier_rows} rows in {c.frontier_build_s * 1000:.0f} ms"
                                                     if c.frontier_rows is not None else "per class")
                     for c in result.candidates)
    fit = [sum(s is not None for s in c.solutions) for c in result.candidates]
    scale = CLASSES / count
    kind = "measured" if count == CLASSES else f"measured on {count} classes, x{scale:.0f} for {CLASSES} derived"
    print(f"  fleet {sizes} blocks, {CLASSES} classes x 3 models ({kind}, {load()}): {wall * scale:.2f} s wall / "
          f"{cpu * scale:.2f} s CPU cold; chose {result.chosen.profile.model.name}; classes that fit per model: "
          f"{fit} of {count}; {rows}")
    return wall * scale, cpu * scale


def slope(xs: list[int], ys: list[float]) -> float:
    """Least-squares slope of log y on log x: time ~ blocks ** slope."""
    lx, ly = [math.log(x) for x in xs], [math.log(max(y, 1e-6)) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly)) / sum((a - mx) ** 2 for a in lx)


def main(sizes: list[int], subset: int) -> None:
    print(f"{load()} at the start; {os.cpu_count()} CPUs; recorded baselines at commit {BASELINE_COMMIT}: {RECORDED}")
    singles, fleets = [], []
    for blocks in sizes:
        print(f"{blocks} blocks x 7 states:")
        singles.append(one_class(blocks))
        frontier(blocks)
        fleets.append(fleet(blocks, subset))
    if len(sizes) > 1:
        one, many = slope(sizes, [c for _, c in singles]), slope(sizes, [c for _, c in fleets])
        print(f"growth exponent over {sizes} blocks (derived: CPU time ~ blocks ** k): one class k = {one:.2f}, "
              f"fleet k = {many:.2f}")
    print("regression, issue 11's fleet with 5 states:")
    (wall, cpu), old = fleet(12, CLASSES, recompute=False), RECORDED[
        "per-class CP-SAT path, fleet 6/8/12 blocks x 5 states, 1,000 classes (s wall / s CPU)"]
    print(f"  recorded per-class CP-SAT path at {BASELINE_COMMIT}: {old[0]} s wall / {old[1]} s CPU; ratio "
          f"{old[0] / wall:.0f}x wall, {old[1] / cpu:.0f}x CPU (derived, different runs)")
    got = {n: (one[1], many[1]) for n, one, many in zip(sizes, singles, fleets)}
    checks = {"one class, 32 blocks": got.get(32, (None, None))[0], "fleet, 32 blocks": got.get(32, (None, None))[1],
              "fleet, 12 blocks": got.get(12, (None, None))[1]}
    print("targets (CPU s): " + "; ".join(
        f"{k} <= {TARGETS[k]}: " + ("not run" if v is None else f"{v:.3f} {'met' if v <= TARGETS[k] else 'NOT met'}")
        for k, v in checks.items()))

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[12, 16, 24, 32], help="block counts")
    parser.add_argument("--fleet-classes", type=int, default=FLEET_SUBSET,
                        help=f"classes timed where a fleet plans per class (default {FLEET_SUBSET})")
    args = parser.parse_args()
    main(args.sizes, max(1, args.fleet_classes))
