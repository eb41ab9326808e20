"""Fleet mode: one model for a whole fleet of device classes, each class with its own configuration.

Every candidate model gets one ProfilePlanner (its frontier is built once) and every class a lookup
(solve/planner.py), so each class gets exactly what solve_device gives it. With fleet-wide limits
(FleetLimits: server ingress, block coverage) the rows of all classes are chosen together instead
(solve/coupling.py); a class may then sit out, or take a row other than its own best.
A model's score is sum(share x objective value) over the classes it plans (a class that fits nothing sits
out); a model that plans no class is not eligible; ties go to the lower share-weighted predicted peak, then
to the earlier model in the list.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable

from budgetplan.errors import ConfigError, InfeasibleError
from budgetplan.profile.types import ModelProfile, is_trainable
from budgetplan.devices import DeviceClass
from budgetplan.solve.caps import Budget, budget_of
from budgetplan.solve.coupling import OPTIMAL, Candidate, FleetLimits, LimitUse, coupling_data, limit_use, reduce_rows, \
    solve_coupling
from budgetplan.solve.coverage import plan_coverage
from budgetplan.solve.fleet_file import Fleet
from budgetplan.solve.frontier import row_limit_for
from budgetplan.solve.objective import COVERAGE
from budgetplan.solve.planner import ProfilePlanner
from budgetplan.solve.solution import DeviceSolution, solution_for

# The reason of a class that fits its budgets but sits out so the fleet meets its limits (not "nothing fits").
LIMITS_REASON = "sits out to meet the fleet limits"


@dataclass(frozen=True)
class ModelChoice:
    profile: ModelProfile
    score: float  # sum(share x objective value) over the classes planned
    solutions: tuple[DeviceSolution | None, ...]  # per fleet class; None = the class sits out
    reasons: tuple[str | None, ...]  # per fleet class, why it sits out
    frontier_rows: int | None = None  # rows of the model's frontier (None: planned per class, too large)
    frontier_build_s: float = 0.0
    limit_use: LimitUse | None = None  # with fleet limits: what the plans use of them and whether they bind
    planner: ProfilePlanner | None = field(default=None, compare=False, repr=False)  # answers the plan's ladders


@dataclass(frozen=True)
class FleetSolution:
    fleet: Fleet
    chosen: ModelChoice
    candidates: tuple[ModelChoice, ...]
    status: str  # OPTIMAL: proved (always without fleet limits; with them, CP-SAT's proof)
    solve_s: float
    limits: FleetLimits = FleetLimits()


def _own_answers(planner: ProfilePlanner, fleet: Fleet, budgets: list[Budget],
                 tick: Callable[[], None]) -> list[tuple]:
    """Per class (solution, reason): one lookup for all classes; classes with identical integer budgets are
    planned once (the first of them), the others get a copy under their own name."""
    first: dict[Budget, DeviceClass] = {}
    for member, budget in zip(fleet.classes, budgets):
        first.setdefault(budget, member.device)
    solved = dict(zip(first, planner.solve_classes(list(first.values()), list(first))))
    results = []
    for member, budget in zip(fleet.classes, budgets):
        (solution, reason), device, name = solved[budget], member.device, first[budget].name
        if solution is not None and solution.device is not device:
            solution = dataclasses.replace(solution, device=device, solve_s=0.0)
        reason = device.name + reason[len(name):] if reason else None
        results.append((solution, reason))
        tick()
    return results


def _answers(profile: ModelProfile, fleet: Fleet, budgets: list[Budget], how: tuple, tick: Callable[[], None]):
    """(the planner that reports the model, one planner per class, per class (solution, reason)); `coverage`
    plans the classes to its fixed point (solve/coverage.py), every other objective with one planner."""
    objective, contiguous, importance, row_limit = how
    if objective != COVERAGE:
        planner = ProfilePlanner(profile, objective, contiguous, importance, row_limit)
        return planner, [planner] * len(budgets), _own_answers(planner, fleet, budgets, tick)
    plans = plan_coverage(profile, [m.device for m in fleet.classes], [m.share for m in fleet.classes], budgets,
                          contiguous, row_limit)
    for _ in budgets:
        tick()
    return plans.planners[0], list(plans.planners), list(plans.answers)


def _candidates(planners: list[ProfilePlanner], fleet: Fleet, limits: FleetLimits) -> list[list[Candidate]]:
    out = []
    for member, planner in zip(fleet.classes, planners):
        caps = planner.caps(budget_of(member.device))
        rows = planner.rows(caps)
        fit = [int(r) for r in rows.fitting(*caps).nonzero()[0]]
        cands = [Candidate(rows.states(r), int(rows.objective[r]), int(rows.upload_bytes[r]),
                           tuple(is_trainable(s) for s in rows.states(r))) for r in fit]
        out.append(reduce_rows(cands, limits))
    return out


def _coupled(planners: list[ProfilePlanner], fleet: Fleet, limits: FleetLimits, own: list[tuple], solver: tuple):
    """Per class (solution, reason) under the fleet limits, and the CP-SAT status (planners: one per class)."""
    candidates = _candidates(planners, fleet, limits)
    data = coupling_data([m.share for m in fleet.classes], candidates, limits)
    choice, status = solve_coupling(data, limits, *solver)
    results = []
    for member, planner, cands, row, (solution, reason) in zip(fleet.classes, planners, candidates, choice, own):
        if row is None:
            results.append((None, reason or f"{member.device.name}: {LIMITS_REASON} ({_text(limits)})"))
            continue
        budget = budget_of(member.device)
        pick = cands[row]
        cost = planner.checked(pick.states, pick.objective, member.device.name)
        results.append((solution_for(pick.states, pick.objective, cost, member.device, planner.profile, planner.goal,
                                     planner.contiguous, budget, planner.caps(budget), planner.unconstrained(), 0.0),
                        None))
    return results, status


def _text(limits: FleetLimits) -> str:
    parts = []
    if limits.ingress_bytes_per_round is not None:
        parts.append(f"ingress {limits.ingress_bytes_per_round} bytes per round from {limits.clients_per_round} clients")
    if limits.min_coverage is not None:
        parts.append(f"block coverage >= {limits.min_coverage:g} of the clients")
    return ", ".join(parts)


def _choice(planner: ProfilePlanner, fleet: Fleet, results: list, use: LimitUse | None = None) -> ModelChoice:
    solutions = tuple(r[0] for r in results)
    score = sum(c.share * float(s.objective_value) for c, s in zip(fleet.classes, solutions) if s is not None)
    frontier = planner.frontier
    return ModelChoice(planner.profile, score, solutions, tuple(r[1] for r in results),
                       len(frontier) if frontier is not None else None, frontier.build_s if frontier else 0.0, use,
                       planner)


def _use(fleet: Fleet, results: list, own: list, limits: FleetLimits) -> LimitUse:
    plans = [[None if s is None else (s.block_states, s.upload_bytes_per_round) for s, _ in r] for r in (results, own)]
    return limit_use([c.share for c in fleet.classes], plans[0], plans[1], limits)


def _weighted_peak(choice: ModelChoice, fleet: Fleet) -> float:
    return sum(c.share * s.peak_bytes for c, s in zip(fleet.classes, choice.solutions) if s is not None)


def solve_fleet(profiles: list[ModelProfile], fleet: Fleet, objective: str = "layers", contiguous: bool = False,
                time_limit_s: float = 10.0, seed: int = 0, workers: int = 1,
                importance: tuple[float, ...] | None = None,
                progress: Callable[[int, int], None] | None = None,
                limits: FleetLimits | None = None) -> FleetSolution:
    """The candidate model with the best share-weighted objective over the fleet, each class planned exactly.
    `limits` (default: the fleet file's) couple the classes; time_limit_s, seed and workers are CP-SAT's then."""
    if not profiles:
        raise ConfigError(f"{fleet.origin}: no candidate model to solve for; list profile paths in models")
    limits = fleet.limits if limits is None else limits
    start, total, count = time.perf_counter(), len(profiles) * len(fleet.classes), [0]

    def tick() -> None:
        count[0] += 1
        if progress is not None:
            progress(count[0], total)

    candidates, status, budgets = [], OPTIMAL, [budget_of(member.device) for member in fleet.classes]
    row_limit = row_limit_for(len(set(budgets)))
    for profile in profiles:
        planner, planners, results = _answers(profile, fleet, budgets, (objective, contiguous, importance, row_limit),
                                              tick)
        use = None
        if limits.active:
            own = results
            results, proved = _coupled(planners, fleet, limits, own, (time_limit_s, seed, workers))
            status, use = status if proved == OPTIMAL else proved, _use(fleet, results, own, limits)
        candidates.append(_choice(planner, fleet, results, use))
    eligible = [c for c in candidates if any(s is not None for s in c.solutions)]
    if not eligible:
        first = candidates[0]
        raise InfeasibleError(f"fleet {fleet.name}: no candidate model fits any class; for "
                              f"{first.profile.model.name}: " + "; ".join(first.reasons))
    chosen = max(eligible, key=lambda c: (c.score, -_weighted_peak(c, fleet), -candidates.index(c)))
    return FleetSolution(fleet, chosen, tuple(candidates), status, time.perf_counter() - start, limits)
