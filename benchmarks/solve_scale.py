"""How the planner scales, against the per-class CP-SAT path it replaced, in one run:
one device class on a 12-block x 5-state profile; a fleet of 1,000 classes x 3 candidate models (6, 8, 12
blocks), new planner and the old path on the same classes; the same fleet with +recompute states (7 states
per block, new planner only); 12-block profiles with uneven (random) blocks, whose frontier outgrows the row
limit, with and without recompute states.

Synthetic profiles come from budgetplan.testing:
BERT-style encoders at real scale (hidden 384, batch 16, sequence 128, fp32, Adam) with states frozen_outside,
frozen_in_path, trained, lora-4 and lora-8 (with_recompute adds trained+recompute and lora-R+recompute: the
forward again inside the backward, only the block input kept, the activations alive again in its backward).
Budgets are drawn (seeded) around the bundled device classes:
memory 0.25-8 GiB, sustained 2-300 GFLOP/s, uplink 1-50 Mbit/s, round deadline 60-600 s, upload time 10-120 s,
64-512 samples per round (log-uniform, rounded like a device file would be).

Baseline: benchmarks/cpsat_baseline, the per-class CP-SAT planner as it was before the frontier (one built
model per profile, answers reused across classes by dominance, 1 worker), on the same fleet. Every printed
time is measured in this process: wall (time.perf_counter) and this process's CPU time (time.process_time,
less sensitive to other processes on a shared machine); the load is os.getloadavg() when it is taken. The
new planner's fleet time is its first solve in the process (cold: frontiers built, nothing cached from an
earlier fleet) and the median of REPEATS solves; the speed-up divides the baseline by the cold time.
The old path takes minutes: --baseline-classes N runs both on the first N classes only (the ratio then is
for N classes; the 1,000-class new-planner figures are printed either way).
Run: PYTHONPATH=src .venv/bin/python benchmarks/solve_scale.py [--baseline-classes N]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/cpsat_baseline

from cpsat_baseline.classes import ProfileSolver  # noqa: E402
from cpsat_baseline.run import SolverParams  # noqa: E402

from budgetplan.devices import DeviceClass  # noqa: E402
from budgetplan.profile.compose import compose  # noqa: E402
from budgetplan.profile.types import is_trainable, recompute_state  # noqa: E402
from budgetplan.solve import Fleet, FleetClass, ProfilePlanner, solve_device, solve_fleet  # noqa: E402
from budgetplan.solve.caps import budget_of  # noqa: E402
from budgetplan.solve.frontier import ROW_LIMIT  # noqa: E402
from budgetplan.testing import make_profile, make_transformer_profile  # noqa: E402

CLASSES, SEED, UNEVEN_CLASSES = 1000, 0, 20
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


def one_class() -> None:
    profile = make_transformer_profile(num_blocks=12, lora_ranks=(4, 8))
    device = dataclasses.replace(random_device(random.Random(SEED), 0), memory_bytes=400 * 2**20, flops_per_s=20e9)
    start = time.perf_counter()
    new = solve_device(profile, device)
    new_s = time.perf_counter() - start
    start = time.perf_counter()
    old = ProfileSolver(profile, params=SolverParams(10.0, 0, 1)).solve(device)
    old_s = time.perf_counter() - start
    print(f"one class, 12 blocks x {len(profile.block_state_names)} states (measured): frontier {new_s:.3f} s "
          f"({new.status}, objective {new.objective_value}, binding {new.binding}); per-class CP-SAT {old_s:.3f} s "
          f"({old.status}, objective {old.objective_value}); same answer: {old.block_states == new.block_states}")


def baseline_fleet(profiles, fleet: Fleet) -> list[list]:
    """The old fleet path: per model one CP-SAT model, larger classes first, answers reused where provable."""
    out = []
    for profile in profiles:
        solver = ProfileSolver(profile, params=SolverParams(10.0, 0, 1), relax=True)
        budgets = [budget_of(c.device) for c in fleet.classes]
        order = sorted(range(len(budgets)), key=lambda i: tuple(-c for c in solver.caps(budgets[i])))
        done, results = {}, [None] * len(budgets)
        for i in order:
            if budgets[i] not in done:
                done[budgets[i]] = solver.solve_class(fleet.classes[i].device)
            results[i] = done[budgets[i]]
        out.append(results)
    return out


TARGET_S, TARGET_SPEEDUP, REPEATS = 0.25, 100, 5
COLD_CPU = [0.0]  # the CPU time of new_fleet's last cold solve


def load() -> str:
    return "load %.2f %.2f %.2f" % os.getloadavg()


def with_recompute(profile):
    """The profile with a +recompute variant of every trainable block state (see the module docstring)."""
    def recomputed(cost):
        return dataclasses.replace(cost, flops_backward=cost.flops_backward + cost.flops_forward, activation_bytes=0,
                                   saves_input=True, saves_output=False,
                                   backward_extra_bytes=cost.backward_extra_bytes + cost.activation_bytes)
    blocks = []
    for block in profile.blocks:
        extra = {recompute_state(s): {b: recomputed(c) for b, c in by.items()}
                 for s, by in block.states.items() if is_trainable(s)}
        names = {**block.trainable_names, **{recompute_state(s): n for s, n in block.trainable_names.items()}}
        blocks.append(dataclasses.replace(block, states={**block.states, **extra}, trainable_names=names))
    return dataclasses.replace(profile, blocks=tuple(blocks))


def timed(call):
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def new_fleet(profiles, fleet: Fleet, label: str, repeats: int = REPEATS):
    """The new planner on the fleet: cold solve, then the median of `repeats`."""
    result, cold_s, cold_cpu = timed(lambda: solve_fleet(profiles, fleet))
    again = sorted(timed(lambda: solve_fleet(profiles, fleet))[1:] for _ in range(repeats))
    wall, cpu = again[len(again) // 2]
    proved = all(s.status == "OPTIMAL" for c in result.candidates for s in c.solutions if s is not None)
    rows = ", ".join(f"{c.profile.model.name}: {c.frontier_rows} rows in {c.frontier_build_s * 1000:.0f} ms"
                     for c in result.candidates)
    fit = [sum(s is not None for s in c.solutions) for c in result.candidates]
    COLD_CPU[0] = cold_cpu
    print(f"{label}, {len(fleet.classes)} classes x {len(profiles)} models (measured, {load()}): new planner "
          f"cold {cold_s:.3f} s wall / {cold_cpu:.3f} s CPU, median of {repeats} {wall:.3f} s wall / {cpu:.3f} s CPU; "
          f"every class proved optimal: {proved}; chose {result.chosen.profile.model.name} "
          f"(score {result.chosen.score:.4f}); classes that fit per model: {fit}")
    print(f"  frontier sizes and build times (measured): {rows}")
    return result, cold_s


def make_fleet(count: int) -> Fleet:
    rng = random.Random(SEED)
    return Fleet("benchmark", tuple(FleetClass(random_device(rng, i), 1 / count) for i in range(count)), (),
                 "<benchmark>")


def fleet_run(baseline_classes: int) -> None:
    profiles = [make_transformer_profile(num_blocks=n, lora_ranks=(4, 8), name=f"bert-like-{n}") for n in (6, 8, 12)]
    fleet = make_fleet(CLASSES)
    (result, new_s), new_cpu = new_fleet(profiles, fleet, "fleet (6, 8, 12 blocks x 5 states)"), COLD_CPU[0]
    new_fleet([with_recompute(p) for p in profiles], fleet, "fleet with +recompute states (7 per block)", 1)
    if baseline_classes < CLASSES:  # the same first classes for both (random_device is drawn in order)
        fleet = Fleet("benchmark", fleet.classes[:baseline_classes], (), "<benchmark>")
        result, new_s, new_cpu = timed(lambda: solve_fleet(profiles, fleet))
    print(f"  per-class CP-SAT path on {len(fleet.classes)} classes x {len(profiles)} models ({load()}) ...", flush=True)
    old, old_s, old_cpu = timed(lambda: baseline_fleet(profiles, fleet))
    differ = sum((o[0].block_states if o[0] else None) != (n.block_states if n else None)
                 for results, choice in zip(old, result.candidates) for o, n in zip(results, choice.solutions))
    unproved = sum(not o[2] for results in old for o in results)
    speedup = old_s / new_s
    print(f"  per-class CP-SAT path (benchmarks/cpsat_baseline, measured, {load()}): {old_s:.2f} s wall / "
          f"{old_cpu:.2f} s CPU; new planner on the same classes {new_s:.3f} s wall / {new_cpu:.3f} s CPU (cold); "
          f"speed-up {speedup:.0f}x wall, {old_cpu / new_cpu:.0f}x CPU (derived); answers differing: {differ} of {len(fleet.classes) * len(profiles)}; CP-SAT answers not "
          f"proved: {unproved}")
    print(f"  targets: new planner <= {TARGET_S} s: {new_s <= TARGET_S} wall, {new_cpu <= TARGET_S} CPU; speed-up >= "
          f"{TARGET_SPEEDUP}x: {speedup >= TARGET_SPEEDUP} wall, {old_cpu / new_cpu >= TARGET_SPEEDUP} CPU" + ("" if len(fleet.classes) == CLASSES else
                                            f" (on {len(fleet.classes)} classes, not {CLASSES})"))


def uneven() -> None:
    """Random (uneven) 12-block profiles: the shared frontier gives up at ROW_LIMIT partial rows (the growth
    bound), then every class runs its own programme pruned by its caps (exact, slower)."""
    for seed, recompute in ((0, False), (1, False), (0, True)):
        profile = make_profile(num_blocks=12, seed=seed, lora_ranks=(4, 8), recompute=recompute)
        planner, build_s, _ = timed(lambda: ProfilePlanner(profile))
        full, head = compose(profile, ("trained",) * 12), compose(profile, ("frozen_outside",) * 12)
        rng, times, largest = random.Random(seed), [], 0
        for _ in range(UNEVEN_CLASSES):
            caps = tuple(rng.randint(lo, hi) for lo, hi in (
                (head.peak_bytes_predicted, full.peak_bytes_predicted),
                (head.flops_forward + head.flops_backward, full.flops_forward + full.flops_backward),
                (head.upload_bytes, full.upload_bytes)))
            times.append(timed(lambda: planner.answer(caps))[1])
            if planner.frontier is None:
                largest = max(largest, planner.rows(caps).largest_partial_rows)
        mode = (f"frontier of {len(planner.frontier)} rows" if planner.frontier is not None else
                f"over the bound of {ROW_LIMIT} partial rows, per class: largest {largest} partial rows")
        print(f"uneven 12 blocks x {len(profile.block_state_names)} states, seed {seed} (measured, {load()}): "
              f"build {build_s:.2f} s, {mode}; {UNEVEN_CLASSES} classes: mean {sum(times) / len(times):.3f} s, "
              f"worst {max(times):.3f} s")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-classes", type=int, default=CLASSES,
                        help=f"run the old per-class CP-SAT path on the first N classes only (default {CLASSES})")
    args = parser.parse_args()
    print(f"{load()} at the start; {os.cpu_count()} CPUs")
    one_class()
    fleet_run(max(1, min(args.baseline_classes, CLASSES)))
    uneven()
