"""The fleet-aware objective `coverage`: each class values a block by how much of a round's data trains it.

Layer-wise FedAvg averages a block over the clients that train it. A block that only one small class trains is
averaged over a few (label-skewed) clients and drifts; a block every class trains is averaged over the whole
round. So a class's value for training block b is `layers`' value times coverage(b): the share of the fleet's
samples per round (class share x samples per round) that would train b, counting the class itself and the other
classes' current plans.

That is a fixed point (each class's weights depend on the others' plans). We pick the sequential one, weakest
class first, and iterate:
- pass 1 plans the classes from weakest (the lowest `layers` answer) to strongest, each given the plans made so
  far. The weakest sees no other plan, so its weights are uniform and it plans what `layers` plans: what the
  weakest can train is the fleet's common core. Each stronger class then sees the core: blocks of the core carry
  the weaker classes' samples and gain value, blocks only it could train keep its own share only.
- later passes re-plan every class in the same order against all the others' latest plans, until a pass changes
  nothing (a fixed point) or MAX_PASSES passes have run (then the last pass stands; the result says so).
Why not a joint formulation: a common core chosen jointly needs the product of every class's frontier (or a
CP-SAT model with a quadratic coverage term); the sequential fixed point reuses the exact per-class planner, so
every class's answer is still the planner's proved optimum for its weight table (tests compare it with brute
force), and weakest-first is the order in which the common core is defined by the classes that bound it.
"""

from __future__ import annotations

from dataclasses import dataclass

from budgetplan.devices import DeviceClass
from budgetplan.profile.types import ModelProfile, is_trainable
from budgetplan.solve.caps import Budget
from budgetplan.solve.objective import COVERAGE, LAYERS
from budgetplan.solve.planner import ProfilePlanner

MAX_PASSES = 8
COVERAGE_DIGITS = 3  # coverage is rounded so equal plans give equal weight tables (one frontier each)


@dataclass(frozen=True)
class CoveragePlans:
    """Per class: its planner (its weight table) and its answer (solution, reason)."""

    planners: tuple[ProfilePlanner, ...]
    answers: tuple[tuple, ...]
    coverage: tuple[tuple[float, ...], ...]  # per class, the per-block coverage it was planned with
    passes: int
    converged: bool


def samples_per_round(shares: list[float], devices: list[DeviceClass]) -> list[float]:
    """Each class's share of a round's samples: fleet share x the samples its device trains per round."""
    raw = [max(share, 0.0) * max(d.samples_per_round, 0) for share, d in zip(shares, devices)]
    total = sum(raw)
    return [r / total if total > 0 else 0.0 for r in raw]


def block_coverage(me: int, weight: list[float], trains: list[tuple[bool, ...] | None], blocks: int
                   ) -> tuple[float, ...]:
    """Coverage of each block if class `me` trains it: its own weight plus that of every other class whose
    current plan trains the block (None: a class that sits out)."""
    out = []
    for b in range(blocks):
        others = sum(w for c, (w, t) in enumerate(zip(weight, trains)) if c != me and t is not None and t[b])
        out.append(round(min(1.0, weight[me] + others), COVERAGE_DIGITS))
    return tuple(out)


def _trains(answer) -> tuple[bool, ...] | None:
    solution = answer[0]
    return None if solution is None else tuple(is_trainable(s) for s in solution.block_states)


def plan_coverage(profile: ModelProfile, devices: list[DeviceClass], shares: list[float], budgets: list[Budget],
                  contiguous: bool = False, row_limit: int | None = None) -> CoveragePlans:
    """Every class planned under `coverage` (see the module docstring)."""
    planners: dict[tuple, ProfilePlanner] = {}

    def planner(coverage: tuple[float, ...]) -> ProfilePlanner:
        if coverage not in planners:
            planners[coverage] = ProfilePlanner(profile, COVERAGE, contiguous, coverage, row_limit)
        return planners[coverage]

    n, blocks = len(devices), profile.num_blocks
    layers = ProfilePlanner(profile, LAYERS, contiguous, None, row_limit).solve_classes(devices, budgets)
    order = sorted(range(n), key=lambda c: (layers[c][0] is not None,
                                            0 if layers[c][0] is None else layers[c][0].objective_value, c))
    weight = samples_per_round(shares, devices)
    answers: list = [(None, None)] * n
    used: list = [None] * n
    coverage: list = [(1.0,) * blocks] * n
    trains: list = [None] * n
    for passes in range(1, MAX_PASSES + 1):
        before = list(trains)
        for c in order:
            coverage[c] = block_coverage(c, weight, trains, blocks)
            used[c] = planner(coverage[c])
            answers[c] = used[c].solve_classes([devices[c]], [budgets[c]])[0]
            trains[c] = _trains(answers[c])
        if trains == before:
            return CoveragePlans(tuple(used), tuple(answers), tuple(coverage), passes, True)
    return CoveragePlans(tuple(used), tuple(answers), tuple(coverage), MAX_PASSES, False)
