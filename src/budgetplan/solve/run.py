"""Solve a built StateModel under given budget caps: the lexicographic objective, statuses, and the minimum
of one quantity (used to explain an infeasible budget)."""

from __future__ import annotations

from dataclasses import dataclass

from ortools.sat.python import cp_model
from ortools.util.python.sorted_interval_list import Domain

from budgetplan.solve.budget import BUDGET_NAMES
from budgetplan.solve.cpmodel import StateModel

OPTIMAL, FEASIBLE, INFEASIBLE, UNKNOWN = "OPTIMAL", "FEASIBLE", "INFEASIBLE", "UNKNOWN"
_STATUS = {cp_model.OPTIMAL: OPTIMAL, cp_model.FEASIBLE: FEASIBLE, cp_model.INFEASIBLE: INFEASIBLE}


@dataclass(frozen=True)
class SolverParams:
    time_limit_s: float = 10.0  # per CP-SAT solve
    seed: int = 0
    workers: int = 1


@dataclass(frozen=True)
class Outcome:
    """The values the solver's own model gives the configuration it chose (None fields when no plan)."""

    status: str
    block_states: tuple[str, ...] | None = None
    primary: int = 0  # integer objective (see Objective.scale)
    peak_bytes: int = 0
    flops_per_step: int = 0
    upload_bytes: int = 0
    trainable_params: int = 0
    wall_s: float = 0.0

    @property
    def found(self) -> bool:
        return self.status in (OPTIMAL, FEASIBLE)


def set_caps(sm: StateModel, caps: dict[str, int | None]) -> None:
    """Fix each budget variable; None relaxes the budget (the cap becomes the largest possible value)."""
    for name in BUDGET_NAMES:
        bound = sm.cap_bounds[name]
        value = bound if caps.get(name) is None else max(0, min(int(caps[name]), bound))
        sm.caps[name].with_domain(Domain(value, value))


def _solver(params: SolverParams, time_limit_s: float | None = None) -> cp_model.CpSolver:
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(time_limit_s if time_limit_s is not None else params.time_limit_s, 0.01)
    solver.parameters.random_seed = params.seed
    solver.parameters.num_workers = params.workers
    return solver


def _outcome(sm: StateModel, solver: cp_model.CpSolver, status: str, wall_s: float) -> Outcome:
    if status not in (OPTIMAL, FEASIBLE):
        return Outcome(status, wall_s=wall_s)
    return Outcome(
        status=status,
        block_states=sm.block_states(solver.boolean_value),
        primary=int(solver.value(sm.primary)),
        peak_bytes=int(sm.peak_bytes(solver.value, solver.boolean_value)),
        flops_per_step=int(solver.value(sm.flops_per_step)),
        upload_bytes=int(solver.value(sm.upload_bytes)),
        trainable_params=int(solver.value(sm.trainable_params)),
        wall_s=wall_s,
    )


def solve_best(sm: StateModel, caps: dict[str, int | None], params: SolverParams) -> Outcome:
    """Maximise the objective; among equal objectives, minimise the predicted peak."""
    set_caps(sm, caps)
    sm.primary_floor.with_domain(Domain(0, 0))
    if sm.lexicographic_weight is not None:
        sm.model.maximize(sm.primary * sm.lexicographic_weight - sm.peak)
        solver = _solver(params)
        status = _STATUS.get(solver.solve(sm.model), UNKNOWN)
        return _outcome(sm, solver, status, solver.wall_time)
    sm.model.maximize(sm.primary)
    first = _solver(params)
    status = _STATUS.get(first.solve(sm.model), UNKNOWN)
    if status not in (OPTIMAL, FEASIBLE):
        return Outcome(status, wall_s=first.wall_time)
    best = int(first.value(sm.primary))
    sm.primary_floor.with_domain(Domain(best, best))
    sm.model.minimize(sm.peak)
    second = _solver(params, params.time_limit_s - first.wall_time)
    second_status = _STATUS.get(second.solve(sm.model), UNKNOWN)
    sm.primary_floor.with_domain(Domain(0, 0))
    if second_status not in (OPTIMAL, FEASIBLE):  # out of time: keep the first solve's configuration
        return _outcome(sm, first, FEASIBLE, first.wall_time + second.wall_time)
    both_proved = status == OPTIMAL and second_status == OPTIMAL
    return _outcome(sm, second, OPTIMAL if both_proved else FEASIBLE, first.wall_time + second.wall_time)


def solve_min(sm: StateModel, caps: dict[str, int | None], quantity: str, params: SolverParams) -> Outcome:
    """The configuration with the smallest `quantity` (a budget name) under the given caps."""
    set_caps(sm, caps)
    sm.primary_floor.with_domain(Domain(0, 0))
    sm.model.minimize(sm.quantity(quantity))
    solver = _solver(params)
    status = _STATUS.get(solver.solve(sm.model), UNKNOWN)
    return _outcome(sm, solver, status, solver.wall_time)
