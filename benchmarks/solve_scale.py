"""How the solver scales: one device class on a 12-block x 5-state profile, and a fleet of 1,000 classes x 3
candidate models solved to proven optimality.

Synthetic profiles come from budgetplan.testing:
BERT-style encoders at real scale (hidden 384, batch 16, sequence 128, fp32, Adam) with states frozen_outside,
frozen_in_path, trained, lora-4 and lora-8. Budgets are drawn (seeded) around the bundled device classes:
memory 0.25-8 GiB, sustained 2-300 GFLOP/s, uplink 1-50 Mbit/s, round deadline 60-600 s, upload time 10-120 s,
64-512 samples per round (log-uniform, rounded like a device file would be).

Baseline: one full solve_device call (a fresh model, no reuse) per class, timed on a seeded sample of classes
in the same process and extrapolated to the whole fleet; the baseline's answers on the sample are checked
against the fleet's. Run: .venv/bin/python benchmarks/solve_scale.py
"""

from __future__ import annotations

import dataclasses
import math
import random
import time

from budgetplan.devices import DeviceClass
from budgetplan.errors import InfeasibleError
from budgetplan.solve import Fleet, FleetClass, solve_device, solve_fleet
from budgetplan.testing import make_transformer_profile

CLASSES, SAMPLE, SEED = 1000, 30, 0
PROCESSES = 2  # the fleet's candidate models in two processes (solve_fleet's opt-in); answers do not depend on it
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
    device = random_device(random.Random(SEED), 0)
    device = dataclasses.replace(device, memory_bytes=400 * 2**20, flops_per_s=20e9)
    start = time.perf_counter()
    solution = solve_device(profile, device)
    print(f"one class, 12 blocks x {len(profile.block_state_names)} states: {time.perf_counter() - start:.3f} s, "
          f"{solution.status}, objective {solution.objective_value}, binding {solution.binding}")


def fleet_run() -> None:
    rng = random.Random(SEED)
    devices = [random_device(rng, i) for i in range(CLASSES)]
    fleet = Fleet("benchmark", tuple(FleetClass(d, 1 / CLASSES) for d in devices), (), "<benchmark>")
    profiles = [make_transformer_profile(num_blocks=n, lora_ranks=(4, 8), name=f"bert-like-{n}") for n in (6, 8, 12)]
    start = time.perf_counter()
    result = solve_fleet(profiles, fleet, processes=PROCESSES)
    fleet_s = time.perf_counter() - start
    fits = [sum(s is not None for s in c.solutions) for c in result.candidates]
    print(f"fleet, {CLASSES} classes x {len(profiles)} models (6, 8, 12 blocks), {PROCESSES} processes: "
          f"{fleet_s:.2f} s, {result.status}, "
          f"chose {result.chosen.profile.model.name} (score {result.chosen.score:.4f}); classes that fit per model: {fits}")
    sample = random.Random(SEED + 1).sample(range(CLASSES), SAMPLE)
    start, mismatches = time.perf_counter(), 0
    for profile, choice in zip(profiles, result.candidates):
        for i in sample:
            try:
                direct = solve_device(profile, devices[i])
            except InfeasibleError as exc:
                mismatches += choice.reasons[i] != str(exc)
                continue
            mismatches += dataclasses.replace(direct, solve_s=0.0) != dataclasses.replace(choice.solutions[i], solve_s=0.0)
    per_class = (time.perf_counter() - start) / (SAMPLE * len(profiles))
    naive = per_class * CLASSES * len(profiles)
    print(f"baseline (one solve_device per class and model, measured on {SAMPLE} sampled classes x {len(profiles)} "
          f"models = {per_class * 1000:.1f} ms each, extrapolated to {CLASSES * len(profiles)}): {naive:.1f} s; "
          f"fleet speed-up {naive / fleet_s:.1f}x; sampled answers differing from solve_device: {mismatches}")


if __name__ == "__main__":
    one_class()
    fleet_run()
