"""Answers for any number of device classes of one profile from one built model, with exact reuse.

Why reuse is exact: every answer is the first configuration, in a fixed total order, whose costs fit the
caps (solve/run.py). Let S(C) be the configurations that fit caps C = (peak bytes, FLOPs of one profiled
batch, upload bytes). When C' <= C in every budget, S(C') is a subset of S(C): if C's answer fits C' it is
the first of S(C') as well, and if S(C) is empty so is S(C'). Only proved answers (OPTIMAL, INFEASIBLE)
are stored, so a reused answer is as proved as a fresh one.

Shortcuts, each a solve whose answer the rule above then reuses:
- always: the answer with no budget at all (every class it fits gets it; it also tells whether a budget binds);
- with `relax=True` (fleets): the answer under one budget alone, for each budget the unbudgeted answer
  breaks, so classes bound by the same budget share it, and a budget that alone admits nothing proves every
  tighter class infeasible.
Every best-objective solve also starts from what the stored answers say (AnswerCache.bounds): a floor, a
ceiling and a starting solution. The optimum meets all three, so they narrow the search, never the answer.
A class's answer never depends on the shortcuts or on the other classes (tests compare with solve_device).
"""

from __future__ import annotations

import time

from budgetplan.devices import DeviceClass
from budgetplan.errors import InfeasibleError
from budgetplan.profile.types import ModelProfile
from budgetplan.solve.caps import (
    BUDGET_NAMES,
    COMPUTE,
    MEMORY,
    UPLOAD,
    Budget,
    budget_of,
    flops_per_round,
    format_quantity,
)
from cpsat_baseline.cpmodel import build_state_model
from budgetplan.solve.objective import make_objective
from cpsat_baseline.run import INFEASIBLE, OPTIMAL, Known, Outcome, SolverParams, solve_best, solve_min
from cpsat_baseline.solution import DeviceSolution, caps_of, describe, to_solution

BEST = "best"  # the answer's order: the best objective (run.best_terms), or the least of a budget (run.min_terms)
Caps = tuple[int, int, int]  # (memory, compute, upload) in the model's units, clamped to the model's bounds

# The device-file fields that set each budget, named in the fix.
BUDGET_FIELDS = {MEMORY: "memory_bytes", COMPUTE: "flops_per_s or round_deadline_s",
                 UPLOAD: "uplink_bits_per_s or upload_time_budget_s"}


def fits(outcome: Outcome, caps: Caps) -> bool:
    return (outcome.peak_bytes <= caps[0] and outcome.flops_per_step <= caps[1]
            and outcome.upload_bytes <= caps[2])


class AnswerCache:
    """Proved answers of one order by caps; lookup applies the dominance rule of the module docstring."""

    def __init__(self) -> None:
        self.entries: list[tuple[Caps, Outcome]] = []

    def lookup(self, caps: Caps) -> Outcome | None:
        for known, outcome in self.entries:
            if caps[0] <= known[0] and caps[1] <= known[1] and caps[2] <= known[2]:
                if outcome.status == INFEASIBLE or fits(outcome, caps):
                    return outcome
        return None

    def bounds(self, caps: Caps, others: list[AnswerCache]) -> Known:
        """Bounds on the best objective under `caps` (this cache holds BEST answers): a stored configuration that
        fits gives a floor and a starting solution, an answer under caps no smaller in any budget a ceiling."""
        floor, hint, ceiling = 0, None, None
        for cache in (self, *others):
            for _, outcome in cache.entries:
                if outcome.found and fits(outcome, caps) and (hint is None or outcome.primary > floor):
                    floor, hint = outcome.primary, outcome.block_states
        for known, outcome in self.entries:
            if outcome.found and all(c <= k for c, k in zip(caps, known)):
                ceiling = outcome.primary if ceiling is None else min(ceiling, outcome.primary)
        return Known(floor, ceiling, hint)

    def store(self, caps: Caps, outcome: Outcome) -> None:
        if outcome.status in (OPTIMAL, INFEASIBLE):
            self.entries.append((caps, outcome))


class ProfileSolver:
    """One built StateModel of a profile and the proved answers of every class solved with it."""

    def __init__(self, profile: ModelProfile, objective: str = "layers", contiguous: bool = False,
                 params: SolverParams = SolverParams(), importance: tuple[float, ...] | None = None,
                 relax: bool = False) -> None:
        self.profile, self.contiguous, self.params, self.relax = profile, contiguous, params, relax
        self.goal = make_objective(objective, profile, importance)
        self.sm = build_state_model(profile, self.goal, contiguous)
        self.top: Caps = tuple(self.sm.cap_bounds[n] for n in BUDGET_NAMES)
        self.caches = {kind: AnswerCache() for kind in (BEST, *BUDGET_NAMES)}
        self.solves = 0  # CP-SAT answers computed (not reused)

    def caps(self, budget: Budget) -> Caps:
        """The budget's caps as set_caps applies them (clamped to what any configuration can use)."""
        named = caps_of(budget, self.profile)
        return tuple(max(0, min(int(named[n]), top)) for n, top in zip(BUDGET_NAMES, self.top))

    def answer(self, kind: str, caps: Caps) -> Outcome:
        """The first configuration of order `kind` fitting `caps`, reused when a stored answer decides it."""
        known = self.caches[kind].lookup(caps)
        if known is not None:
            return known
        named = dict(zip(BUDGET_NAMES, caps))
        if kind == BEST:
            others = [c for k, c in self.caches.items() if k != BEST]
            outcome = solve_best(self.sm, named, self.params, self.caches[BEST].bounds(caps, others))
        else:
            outcome = solve_min(self.sm, named, kind, self.params)
        self.solves += 1
        self.caches[kind].store(caps, outcome)
        return outcome

    def _relaxed(self, caps: Caps, free: Outcome) -> None:
        """Answer each budget the unbudgeted answer breaks on its own (stored for reuse by answer)."""
        used = (free.peak_bytes, free.flops_per_step, free.upload_bytes)
        for i in range(len(caps)):
            if free.found and used[i] <= caps[i]:
                continue
            alone = self.answer(BEST, tuple(c if j == i else t for j, (c, t) in enumerate(zip(caps, self.top))))
            if alone.status == INFEASIBLE or (alone.found and fits(alone, caps)):
                return

    def solve_class(self, device: DeviceClass) -> tuple[DeviceSolution | None, str | None, bool]:
        """(solution or None, why nothing fits or None, whether the result was proved)."""
        start = time.perf_counter()
        budget = budget_of(device)
        caps = self.caps(budget)
        free = self.answer(BEST, self.top)
        if self.relax and not (free.found and fits(free, caps)):
            self._relaxed(caps, free)
        outcome = self.answer(BEST, caps)
        if not outcome.found:
            if outcome.status != INFEASIBLE:
                return None, f"{device.name}: no plan found within {self.params.time_limit_s:g} s; raise --time-limit", False
            return None, self.infeasible_message(device.name, budget), True
        outcome = Outcome(**{**outcome.__dict__, "wall_s": time.perf_counter() - start})
        solution = to_solution(outcome, device, self.profile, self.goal, self.contiguous, budget, free.primary)
        return solution, None, outcome.status == OPTIMAL

    def solve(self, device: DeviceClass) -> DeviceSolution:
        solution, reason, _ = self.solve_class(device)
        if solution is None:
            raise InfeasibleError(reason)
        return solution

    def infeasible_message(self, device_name: str, budget: Budget) -> str:
        """Name the budget no configuration meets and the least it needs, with the other budgets held."""
        caps = self.caps(budget)
        needs = []
        for i, name in enumerate(BUDGET_NAMES):
            cheapest = self.answer(name, tuple(t if j == i else c for j, (c, t) in enumerate(zip(caps, self.top))))
            if cheapest.found:
                needs.append(f"the cheapest plan ({describe(cheapest.block_states)}) needs "
                             f"{self._amount(name, cheapest, budget)}; the budget is "
                             f"{format_quantity(name, budget.limit(name))}; raise {BUDGET_FIELDS[name]}")
        if needs:
            return f"{device_name}: " + "; or: ".join(needs) + " (or pick a smaller model)"
        least = {name: self.answer(name, self.top) for name in BUDGET_NAMES}  # nothing else held
        over = [n for n in BUDGET_NAMES if self._value(n, least[n], budget) > budget.limit(n)] or list(BUDGET_NAMES)
        over = [f"{n} needs {self._amount(n, least[n], budget)} (budget {format_quantity(n, budget.limit(n))})"
                for n in over]
        return (f"{device_name}: no plan meets the budgets together; at the least " + ", ".join(over)
                + "; raise the budgets in the device file or pick a smaller model")

    def _value(self, name: str, outcome: Outcome, budget: Budget) -> int:
        if name == COMPUTE:
            return flops_per_round(outcome.flops_per_step, budget.samples_per_round, self.profile.context.batch_size)
        return outcome.peak_bytes if name == MEMORY else outcome.upload_bytes

    def _amount(self, name: str, outcome: Outcome, budget: Budget) -> str:
        return format_quantity(name, self._value(name, outcome, budget))
