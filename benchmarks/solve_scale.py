"""How the planner scales, against the per-class CP-SAT path it replaced, in one run:
one device class on a 12-block x 5-state profile, a fleet of 1,000 classes x 3 candidate models, and a
12-block profile with uneven (random) blocks, whose frontier outgrows the row limit.

Synthetic profiles come from budgetplan.testing:
BERT-style encoders at real scale (hidden 384, batch 16, sequence 128, fp32, Adam) with states frozen_outside,
frozen_in_path, trained, lora-4 and lora-8. Budgets are drawn (seeded) around the bundled device classes:
memory 0.25-8 GiB, sustained 2-300 GFLOP/s, uplink 1-50 Mbit/s, round deadline 60-600 s, upload time 10-120 s,
64-512 samples per round (log-uniform, rounded like a device file would be).

Baseline: benchmarks/cpsat_baseline, the per-class CP-SAT planner as it was before the frontier (one built
model per profile, answers reused across classes by dominance, 1 worker), on the same fleet. Every printed
time is measured (time.perf_counter) in this process. Run: .venv/bin/python benchmarks/solve_scale.py
"""

from __future__ import annotations

import dataclasses
import math
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/cpsat_baseline

from cpsat_baseline.classes import ProfileSolver  # noqa: E402
from cpsat_baseline.run import SolverParams  # noqa: E402

from budgetplan.devices import DeviceClass  # noqa: E402
from budgetplan.profile.compose import compose  # noqa: E402
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


def fleet_run() -> None:
    rng = random.Random(SEED)
    fleet = Fleet("benchmark", tuple(FleetClass(random_device(rng, i), 1 / CLASSES) for i in range(CLASSES)), (),
                  "<benchmark>")
    profiles = [make_transformer_profile(num_blocks=n, lora_ranks=(4, 8), name=f"bert-like-{n}") for n in (6, 8, 12)]
    start = time.perf_counter()
    result = solve_fleet(profiles, fleet)
    new_s = time.perf_counter() - start
    proved = all(s.status == "OPTIMAL" for c in result.candidates for s in c.solutions if s is not None)
    rows = ", ".join(f"{c.profile.model.name}: {c.frontier_rows} rows in {c.frontier_build_s * 1000:.0f} ms"
                     for c in result.candidates)
    fit = [sum(s is not None for s in c.solutions) for c in result.candidates]
    print(f"fleet, {CLASSES} classes x {len(profiles)} models (6, 8, 12 blocks), 1 process (measured): frontier "
          f"planner {new_s:.3f} s, every class proved optimal: {proved}; chose {result.chosen.profile.model.name} "
          f"(score {result.chosen.score:.4f}); classes that fit per model: {fit}")
    print(f"  frontier sizes and build times (measured): {rows}")
    start = time.perf_counter()
    old = baseline_fleet(profiles, fleet)
    old_s = time.perf_counter() - start
    differ = sum((o[0].block_states if o[0] else None) != (n.block_states if n else None)
                 for results, choice in zip(old, result.candidates) for o, n in zip(results, choice.solutions))
    unproved = sum(not o[2] for results in old for o in results)
    print(f"  per-class CP-SAT path (benchmarks/cpsat_baseline, measured): {old_s:.2f} s; frontier speed-up "
          f"{old_s / new_s:.0f}x; answers differing: {differ} of {CLASSES * len(profiles)}; CP-SAT answers not "
          f"proved: {unproved}")


def uneven() -> None:
    """Random (uneven) 12-block profiles: the frontier gives up at ROW_LIMIT partial rows, classes go one by one."""
    for seed in (0, 1):
        profile = make_profile(num_blocks=12, seed=seed, lora_ranks=(4, 8))
        start = time.perf_counter()
        planner = ProfilePlanner(profile)
        build_s = time.perf_counter() - start
        full, head = compose(profile, ("trained",) * 12), compose(profile, ("frozen_outside",) * 12)
        rng, times, largest = random.Random(seed), [], 0
        for _ in range(UNEVEN_CLASSES):
            caps = tuple(rng.randint(lo, hi) for lo, hi in (
                (head.peak_bytes_predicted, full.peak_bytes_predicted),
                (head.flops_forward + head.flops_backward, full.flops_forward + full.flops_backward),
                (head.upload_bytes, full.upload_bytes)))
            start = time.perf_counter()
            planner.answer(caps)
            times.append(time.perf_counter() - start)
            if planner.frontier is None:
                largest = max(largest, planner._rows[(caps, True)].largest_partial_rows)
        mode = (f"frontier of {len(planner.frontier)} rows" if planner.frontier is not None else
                f"over the row limit ({ROW_LIMIT} partial rows), per class: largest {largest} partial rows")
        print(f"uneven 12 blocks x 5 states, seed {seed} (measured): build {build_s:.2f} s, {mode}; "
              f"{UNEVEN_CLASSES} classes: mean {sum(times) / len(times):.3f} s, worst {max(times):.3f} s")


if __name__ == "__main__":
    one_class()
    fleet_run()
    uneven()
