"""Solve a built StateModel under given budget caps: the lexicographic objective, statuses, and the minimum
of one quantity (used to explain an infeasible budget).

Every answer is unique, so it is a function of the caps alone (the fleet reuses answers across device
classes on that basis, see solve/classes.py). The order of configurations is lexicographic:
  best:        the largest objective, then the smallest peak, then the smallest state-index number
  minimum of q: the smallest q, then the smallest state-index number
Terms are packed into one integer objective while the product of their ranges stays below 2**53
(CP-SAT's LP works in doubles); after each solve the packed terms are held at their optimum for the next.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from ortools.sat.python import cp_model
from ortools.util.python.sorted_interval_list import Domain

from budgetplan.solve.caps import BUDGET_NAMES
from cpsat_baseline.cpmodel import LEXICOGRAPHIC_LIMIT, StateModel

OPTIMAL, FEASIBLE, INFEASIBLE, UNKNOWN = "OPTIMAL", "FEASIBLE", "INFEASIBLE", "UNKNOWN"
_STATUS = {cp_model.OPTIMAL: OPTIMAL, cp_model.FEASIBLE: FEASIBLE, cp_model.INFEASIBLE: INFEASIBLE}


@dataclass(frozen=True)
class SolverParams:
    time_limit_s: float = 10.0  # per answer (all the lexicographic solves of it together)
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


@dataclass(frozen=True)
class Term:
    """One level of a lexicographic order: an expression in [0, bound], and how to hold it at its optimum."""

    expr: object
    bound: int
    maximize: bool
    hold: Callable[[int], None]


def _fix(var) -> Callable[[int], None]:
    return lambda value: var.with_domain(Domain(value, value))


def set_caps(sm: StateModel, caps: dict[str, int | None]) -> None:
    """Fix each budget variable; None relaxes the budget (the cap becomes the largest possible value).
    Also releases what an earlier solve held (the objective floor and the tie-break variables)."""
    for name in BUDGET_NAMES:
        bound = sm.cap_bounds[name]
        value = bound if caps.get(name) is None else max(0, min(int(caps[name]), bound))
        sm.caps[name].with_domain(Domain(value, value))
    sm.primary_floor.with_domain(Domain(0, 0))
    sm.primary_ceiling.with_domain(Domain(sm.primary_bound, sm.primary_bound))
    for var, bound in sm.ties:
        var.with_domain(Domain(0, bound))


def _tie_terms(sm: StateModel) -> list[Term]:
    return [Term(var, bound, False, _fix(var)) for var, bound in sm.ties]


def best_terms(sm: StateModel) -> list[Term]:
    """The largest objective, then the smallest peak (held through the memory cap), then the tie-break."""
    return [Term(sm.primary, sm.primary_bound, True, _fix(sm.primary_floor)),
            Term(sm.peak, sm.cap_bounds["memory"], False, _fix(sm.caps["memory"])), *_tie_terms(sm)]


def min_terms(sm: StateModel, quantity: str) -> list[Term]:
    """The smallest `quantity` (held through its cap), then the tie-break."""
    return [Term(sm.quantity(quantity), sm.cap_bounds[quantity], False, _fix(sm.caps[quantity])), *_tie_terms(sm)]


def _packs(terms: list[Term]) -> list[list[Term]]:
    packs, size = [], LEXICOGRAPHIC_LIMIT
    for term in terms:
        if size * (term.bound + 1) >= LEXICOGRAPHIC_LIMIT:
            packs.append([])
            size = 1
        packs[-1].append(term)
        size *= term.bound + 1
    return packs


def _pack_objective(pack: list[Term]):
    """One minimised expression ordering the pack lexicographically (maximised terms negated)."""
    objective, weight = 0, 1
    for term in reversed(pack):
        objective += (-weight if term.maximize else weight) * term.expr
        weight *= term.bound + 1
    return objective


def _solver(params: SolverParams, time_limit_s: float) -> cp_model.CpSolver:
    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(time_limit_s, 0.01)
    solver.parameters.random_seed = params.seed
    solver.parameters.num_workers = params.workers
    # These models presolve in one pass: further passes and the SAT presolve cost more than they save
    # (measured on benchmarks/solve_scale.py; answers and proofs unchanged).
    solver.parameters.max_presolve_iterations = 1
    solver.parameters.cp_model_use_sat_presolve = False
    return solver


def _outcome(sm: StateModel, solver: cp_model.CpSolver, status: str, wall_s: float) -> Outcome:
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


def _hint(sm: StateModel, solver: cp_model.CpSolver) -> None:
    sm.model.clear_hints()
    for part in sm.parts[1:-1]:
        for literal in part.literals:
            sm.model.add_hint(literal, solver.boolean_value(literal))


@dataclass(frozen=True)
class Known:
    """What other proved answers say about the best objective under these caps (exact: the optimum satisfies it)."""

    floor: int = 0  # a configuration that fits these caps reaches this objective
    ceiling: int | None = None  # the best objective under caps at least as large in every budget
    hint: tuple[str, ...] | None = None  # block states of a configuration that fits (a starting solution)


def _hint_states(sm: StateModel, states: tuple[str, ...]) -> None:
    for part, state in zip(sm.parts[1:-1], states):
        matching = [lit for option, lit in zip(part.options, part.literals) if option.state == state]
        for option, lit in zip(part.options, part.literals):
            if option.state != state or len(matching) == 1:
                sm.model.add_hint(lit, option.state == state)


def solve_lex(sm: StateModel, caps: dict[str, int | None], terms: list[Term], params: SolverParams,
              known: Known = Known()) -> Outcome:
    """The first configuration in the order of `terms` that fits `caps`; OPTIMAL only when every step was proved."""
    set_caps(sm, caps)
    sm.model.clear_hints()
    sm.primary_floor.with_domain(Domain(known.floor, known.floor))
    if known.ceiling is not None:
        sm.primary_ceiling.with_domain(Domain(known.ceiling, known.ceiling))
    if known.hint is not None:
        _hint_states(sm, known.hint)
    start, best, proved = time.perf_counter(), None, True
    for pack in _packs(terms):
        sm.model.minimize(_pack_objective(pack))
        solver = _solver(params, params.time_limit_s - (time.perf_counter() - start))
        status = _STATUS.get(solver.solve(sm.model), UNKNOWN)
        if status not in (OPTIMAL, FEASIBLE):  # infeasible, or out of time: keep the last step's answer
            if best is None:
                return Outcome(status, wall_s=time.perf_counter() - start)
            proved = False
            break
        best = _outcome(sm, solver, status, 0.0)
        if status != OPTIMAL:
            proved = False
            break
        for term in pack:
            term.hold(int(solver.value(term.expr)))
        _hint(sm, solver)
    sm.model.clear_hints()
    wall = time.perf_counter() - start
    return Outcome(**{**best.__dict__, "status": OPTIMAL if proved else FEASIBLE, "wall_s": wall})


def solve_best(sm: StateModel, caps: dict[str, int | None], params: SolverParams, known: Known = Known()) -> Outcome:
    """Maximise the objective; among equal objectives, minimise the predicted peak; then the tie-break."""
    return solve_lex(sm, caps, best_terms(sm), params, known)


def solve_min(sm: StateModel, caps: dict[str, int | None], quantity: str, params: SolverParams) -> Outcome:
    """The configuration with the smallest `quantity` (a budget name) under the given caps."""
    return solve_lex(sm, caps, min_terms(sm, quantity), params)
