"""The fleet-aware objective, measured cheaply: the plans each objective makes for the accuracy benchmark's fleets.

    .venv/bin/python benchmarks/coverage_plans.py [--profile PROFILE.json] [--min-coverage 0.5]

For each fleet of benchmarks/accuracy_compare.py (memory-bound, compute/upload-bound; shares 50/30/20%) and each
objective (layers, importance where the profile has measured importance, coverage, and layers with the fleet limit
--min-coverage), it prints every class's configuration, each block's coverage (the share of a round's samples
that train it: derived from the plans and the shares) and two summaries of it: the blocks trained by fewer than
half of a round's samples, and the sample-weighted mean coverage of the trained blocks (1 = every trained block
is averaged over the whole round). No training: this shows what the objectives choose, not what it is worth
(the accuracy benchmark's scheme f measures that).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from accuracy_compare import FLEETS, SHARES, budgets, device_for

from budgetplan.errors import BudgetplanError
from budgetplan.profile.io import read_profile
from budgetplan.profile.types import is_trainable
from budgetplan.solve import Fleet, FleetClass, FleetLimits, solve_fleet
from budgetplan.solve.coverage import samples_per_round

BUNDLED = Path(__file__).resolve().parents[1] / "src/budgetplan/assets/minilm-profile.json"
SHORT = {"trained": "T", "frozen_outside": "-", "frozen_in_path": "-", "frozen": "-"}


def short(states) -> str:
    return " ".join(SHORT.get(s, s.replace("lora-", "L").replace("trained", "T").replace("+recompute", "+r"))
                    for s in states)


def coverage_of(solutions, weights, blocks: int) -> list[float]:
    return [sum(w for s, w in zip(solutions, weights) if s is not None and is_trainable(s.block_states[b]))
            for b in range(blocks)]


def report(name: str, fleet: Fleet, profile, objective: str, limits: FleetLimits | None) -> None:
    start = time.perf_counter()
    try:
        chosen = solve_fleet([profile], fleet, objective=objective, limits=limits).chosen
    except BudgetplanError as exc:
        print(f"  {name}: not planned: {exc}")
        return
    seconds = time.perf_counter() - start
    weights = samples_per_round([c.share for c in fleet.classes], [c.device for c in fleet.classes])
    cover = coverage_of(chosen.solutions, weights, profile.num_blocks)
    trained = [(b, c) for b, c in enumerate(cover) if c > 0]
    thin = [b for b, c in trained if c < 0.5]
    mass = sum(c * c for _, c in trained) / max(sum(c for _, c in trained), 1e-12)
    print(f"  {name} (solved in {seconds:.2f} s, measured):")
    for member, solution in zip(fleet.classes, chosen.solutions):
        print(f"    {member.device.name} ({member.share:.0%}): "
              + ("sits out" if solution is None else short(solution.block_states)))
    print("    coverage per block (derived): " + " ".join(f"{c:.2f}" for c in cover)
          + f"; blocks under 0.5: {thin or 'none'}; coverage-weighted mean coverage of trained blocks: {mass:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", type=Path, default=BUNDLED)
    parser.add_argument("--min-coverage", type=float, default=0.5)
    args = parser.parse_args()
    profile = read_profile(args.profile)
    print(f"profile {args.profile} (batch {profile.context.batch_size}, seq {profile.context.seq_len})")
    objectives = [("layers", "layers", None), ("coverage", "coverage", None),
                  (f"layers + min-coverage {args.min_coverage:g}", "layers",
                   FleetLimits(min_coverage=args.min_coverage))]
    if profile.importance is not None:
        objectives.insert(1, ("importance", "importance", None))
    for fleet_name in FLEETS:
        devices = [device_for(f"class{i}", b, profile.context.batch_size)
                   for i, b in enumerate(budgets(profile, fleet_name))]
        fleet = Fleet(fleet_name, tuple(FleetClass(d, s) for d, s in zip(devices, SHARES)), ("profile",), "benchmark")
        print(f"fleet {fleet_name}:")
        for name, objective, limits in objectives:
            report(name, fleet, profile, objective, limits)


if __name__ == "__main__":
    main()
