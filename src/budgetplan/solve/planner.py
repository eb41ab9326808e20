"""Answers for any number of device classes of one profile, read off its configuration frontier.

A class's answer is the first frontier row, in answer order, whose peak, FLOPs of one profiled batch and
upload fit its caps (solve/frontier.py). When the frontier would outgrow frontier.ROW_LIMIT partial
configurations (projected after a few blocks), each class runs the same programme pruned by its own caps and
by an objective it must reach: rows whose objective plus the most the remaining blocks can add within what is
left of each budget (solve/bounds.py) falls below it can never be its answer. That objective is a guess
stepping down from the bound of the whole programme towards one known to be reached (a standard
configuration, an earlier class's answer, or a narrow beam): a guess some row within the caps reaches is
proved reachable, so the answer is among the rows kept (_answer_rows). The answer is the same, only found
per class. Either way every answer is re-composed with compose() and checked against the caps before it is
returned (solution.check_row once per configuration, solution.solution_for per class).

Why nothing fits is read off the same rows: for each budget, the least any configuration within the other
two budgets needs (a row of least value is always on the frontier: whatever dominates it needs no more). Per
class that least value comes from the programme with the objective set aside (rows then differ only in costs,
so few stay), and the configuration named is the answer under the caps with that budget at its least.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np

from budgetplan.devices import DeviceClass
from budgetplan.errors import InfeasibleError
from budgetplan.profile.compose import compose, standard_configs
from budgetplan.profile.types import FROZEN_OUTSIDE, NO_INPUT_GRAD, TRAINED, ConfigCost, ModelProfile, is_trainable, \
    parse_state
from budgetplan.solve.caps import BUDGET_NAMES, COMPUTE, MEMORY, UPLOAD, Budget, budget_of, flops_per_round, \
    format_quantity
from budgetplan.solve.bounds import SuffixBound
from budgetplan.solve.frontier import ROW_LIMIT, Bound, Frontier, FrontierTooLarge, build_frontier, most_reachable
from budgetplan.solve.objective import make_objective
from budgetplan.solve.solution import DeviceSolution, caps_of, check_row, describe, solution_for

Caps = tuple[int, int, int]  # (memory bytes, FLOPs of one profiled batch, upload bytes)
NO_CAP = 2**62  # a cap no configuration reaches (frontier.INT64_SAFE bounds every sum)
GUESS_PARTS = 16  # the first guess lies this fraction of the gap below the bound (_answer_rows)
BEAM = 64  # rows kept after each block by the heuristic pass that finds the per-class lower bound

# The device-file fields that set each budget, named in the fix.
BUDGET_FIELDS = {MEMORY: "memory_bytes", COMPUTE: "flops_per_s or round_deadline_s",
                 UPLOAD: "uplink_bits_per_s or upload_time_budget_s"}


def frozen_configs(profile: ModelProfile) -> list[tuple[str, ...]]:
    """Every block in one stored form of frozen_outside (e.g. +int8): head only at less resident memory, a
    configuration known to fit that the standard ones may not reach (least() caps its search by it)."""
    return [(state,) * profile.num_blocks for state in profile.block_state_names
            if state != FROZEN_OUTSIDE and parse_state(state).base == FROZEN_OUTSIDE
            and all(NO_INPUT_GRAD in block.states.get(state, {}) for block in profile.blocks)]


class ProfilePlanner:
    """One profile's frontier (built once) and the answers of every class planned with it."""

    def __init__(self, profile: ModelProfile, objective: str = "layers", contiguous: bool = False,
                 importance: tuple[float, ...] | None = None, row_limit: int | None = ROW_LIMIT) -> None:
        self.profile, self.contiguous = profile, contiguous
        self.goal = make_objective(objective, profile, importance)
        try:
            self.frontier: Frontier | None = build_frontier(profile, self.goal, contiguous, row_limit=row_limit)
        except FrontierTooLarge:
            self.frontier = None  # per class (see the module docstring)
        self._rows: dict[Caps, Frontier] = {}
        self._costs_only: tuple | None = None  # (objective of 0, its SuffixBound): _least_value
        self._costs: dict[tuple[str, ...], ConfigCost] = {}
        self._checked: set[tuple[tuple[str, ...], int]] = set()
        self._row_states: dict[int, tuple[str, ...]] = {}
        self._suffix = SuffixBound(profile, self.goal)
        self._free: tuple | None = None
        self._standard: np.ndarray | None = None
        self._planned: list[tuple[Caps, tuple | None, tuple[int, int, int] | None]] = []  # per-class answers

    def cost(self, states: tuple[str, ...]) -> ConfigCost:
        """compose(profile, states), once per configuration (many classes share an answer)."""
        if states not in self._costs:
            self._costs[states] = compose(self.profile, states)
        return self._costs[states]

    def checked(self, states: tuple[str, ...], objective_value: int, name: str) -> ConfigCost:
        """cost(states) after check_row (it composes to these states and this objective), once per row."""
        key = (states, objective_value)
        if key not in self._checked:
            cost = self.cost(states)
            check_row(states, objective_value, cost, self.goal, name)
            self._checked.add(key)
        return self._costs[states]

    def unconstrained(self) -> int:
        """The best objective with no budget at all (a class reaching it is bound by no budget)."""
        if self._free is None:
            self._free = self.answer((NO_CAP,) * 3)
        return self._free[1] if self._free else 0

    def caps(self, budget: Budget) -> Caps:
        named = caps_of(budget, self.profile)
        return named[MEMORY], named[COMPUTE], named[UPLOAD]

    def _known(self) -> np.ndarray:
        """(objective, peak, FLOPs, upload) per row of the standard configurations and of the answers found so far."""
        if self._standard is None:
            rows = []
            for states in standard_configs(self.profile) + frozen_configs(self.profile):
                if self.contiguous and any(is_trainable(s) and s != TRAINED for s in states):
                    continue
                cost = compose(self.profile, states)
                rows.append((self.goal.value(cost.block_states, cost.trainable_params), cost.peak_bytes_predicted,
                             cost.flops_forward + cost.flops_backward, cost.upload_bytes))
            self._standard = np.array(rows, dtype=object)
        return self._standard

    def _known_within(self, caps: Caps) -> np.ndarray:
        """The rows of _known() within the caps."""
        known = self._known()
        return known[(known[:, 1] <= caps[0]) & (known[:, 2] <= caps[1]) & (known[:, 3] <= caps[2])]

    def _reached(self, caps: Caps) -> int:
        """An objective some configuration within caps reaches (0 when none is found): the best of the standard
        configurations and the answers found so far, and unless that already reaches the bound of the whole
        programme, of a narrow beam through the per-class programme (BEAM rows after each block)."""
        best = int(max(self._known_within(caps)[:, 0], default=0))
        if best >= most_reachable(self.profile, self.goal, Bound(caps, 0, self._suffix)):
            return best
        beam = build_frontier(self.profile, self.goal, self.contiguous, Bound(caps, 0, self._suffix), None, BEAM)
        row = beam.best(caps)
        return best if row is None else max(best, int(beam.objective[row]))

    def rows(self, caps: Caps, row_limit: int | None = None) -> Frontier:
        """Rows among which the answer under caps is the first that fits (all of them when the frontier is
        small; else the class's own, pruned by the objective bound: FrontierTooLarge when one pass of its
        programme keeps more than `row_limit` partial configurations)."""
        if self.frontier is not None:
            return self.frontier
        if caps not in self._rows:
            self._rows[caps] = rows = self._answer_rows(caps, row_limit)
            row = rows.best(caps)
            if row is not None:  # a lower bound for the classes planned after this one
                found = (rows.objective[row], rows.peak_bytes[row], rows.flops_per_step[row], rows.upload_bytes[row])
                self._standard = np.vstack([self._known(), np.array([found], dtype=object)])
        return self._rows[caps]

    def _answer_rows(self, caps: Caps, row_limit: int | None = None) -> Frontier:
        """The class's programme pruned at a guessed objective g between a reached one (low) and an upper bound
        (high): when a row within the caps reaches g, the best objective is >= g and every configuration reaching
        it kept all its prefixes, so the answer is among the rows. Else the best is below g, and no more than the
        larger of the best row found and the most any dropped row could still reach (a configuration not among
        the rows lost a prefix whose bound was at least its objective): that is the next high. Guesses step down
        from each high, each step twice the last (the first 1/GUESS_PARTS of the gap): a guess near the bound
        is refuted cheaply, one far below the optimum keeps very many rows (near it many configurations differ by
        a few units of tie-break weight). The last guess is the reached objective itself, which always holds."""
        low = self._reached(caps)
        high = min(most_reachable(self.profile, self.goal, Bound(caps, 0, self._suffix)), self._ceiling(caps))
        high = max(low, int(high)) if math.isfinite(high) else low  # -inf: nothing fits
        step = max(1, (high - low) // GUESS_PARTS)
        while True:
            guess = max(low, high - step)
            rows = build_frontier(self.profile, self.goal, self.contiguous, Bound(caps, guess, self._suffix),
                                  row_limit=row_limit)
            row = rows.best(caps)
            nothing_dropped = rows.most_dropped == -math.inf  # every configuration within the caps is among the rows
            if guess == low or nothing_dropped or (row is not None and rows.objective[row] >= guess):
                return rows
            low = low if row is None else max(low, int(rows.objective[row]))
            high, step = max(low, min(guess - 1, math.ceil(rows.most_dropped))), step * 2

    def answer(self, caps: Caps, row_limit: int | None = None) -> tuple[tuple[str, ...], int] | None:
        """The answer under caps (None: nothing fits); per class, FrontierTooLarge when a pass of the class's
        programme would keep more than `row_limit` partial configurations (None: no limit)."""
        if self.frontier is None:
            nested = self._nested(caps)
            if nested is not False:
                return nested
        rows = self.rows(caps, row_limit)
        row = rows.best(caps)
        found = None if row is None else (rows.states(row), int(rows.objective[row]))
        if self.frontier is None:
            costs = None if row is None else (rows.peak_bytes[row], rows.flops_per_step[row], rows.upload_bytes[row])
            self._planned.append((caps, found, costs))
        return found

    def _within_earlier(self, caps: Caps) -> list[tuple[tuple | None, tuple | None]]:
        """(answer, its costs) of every class planned earlier whose caps are at least these."""
        return [(found, costs) for larger, found, costs in self._planned if all(a >= b for a, b in zip(larger, caps))]

    def _nested(self, caps: Caps):
        """The answer under caps read off a class planned earlier whose caps are at least these (False: none
        decides it). Its answer, where it fits these caps, is theirs: every configuration before it in answer
        order fails the larger caps, so these too; where it had none, nothing fits these either."""
        for found, costs in self._within_earlier(caps):
            if found is None:
                return None
            if all(c <= b for c, b in zip(costs, caps)):
                return found
        return False

    def _ceiling(self, caps: Caps) -> float:
        """The least objective of the answers planned under caps at least these (inf: none): an upper bound,
        since every configuration within these caps is within those."""
        return min((found[1] for found, _ in self._within_earlier(caps) if found is not None), default=float("inf"))

    def answers(self, caps: list[Caps]) -> list[tuple[tuple[str, ...], int] | None]:
        """answer() for many caps (one grid comparison when the frontier is whole)."""
        if self.frontier is None:
            return [self.answer(c) for c in caps]
        rows, frontier = self.frontier.best_of_many(caps), self.frontier
        found = {r: (self.row_states(r), int(frontier.objective[r])) for r in set(rows) - {None}}
        return [None if r is None else found[r] for r in rows]

    def row_states(self, row: int) -> tuple[str, ...]:
        """The states of a frontier row, named once per row (many classes share a row)."""
        if row not in self._row_states:
            self._row_states[row] = self.frontier.states(row)
        return self._row_states[row]

    def solve_classes(self, devices: list, budgets: list[Budget]) -> list[tuple[DeviceSolution | None, str | None]]:
        """solve_class for many classes: one lookup grid for their answers and one for the least each budget
        needs where nothing fits (the rows and order least() takes, so the same answers and messages)."""
        caps = [self.caps(b) for b in budgets]
        if self.frontier is None:  # the larger caps first: their answers decide many of the smaller (_nested)
            found = {c: self.answer(c) for c in sorted(set(caps), key=lambda c: -sum(math.log1p(x) for x in c))}
            return [self.solve_class(d, found[c], b, c) for d, b, c in zip(devices, budgets, caps)]
        found = self.answers(caps)
        missing = [i for i, f in enumerate(found) if f is None]
        least = dict(zip(missing, self.frontier.least_of_many([caps[i] for i in missing], NO_CAP)))
        out: list[tuple[DeviceSolution | None, str | None]] = []
        for i, (device, budget) in enumerate(zip(devices, budgets)):
            if found[i] is None:
                out.append((None, self.infeasible_message(device.name, budget, self._named(least[i]))))
            else:
                out.append(self.solve_class(device, found[i], budget, caps[i]))
        return out

    def _named(self, rows: list[int | None]) -> list[tuple[tuple[str, ...], int] | None]:
        """least_of_many's rows per budget as least() gives them: (states, value) or None."""
        values = self.frontier.budget_values
        return [None if r is None else (self.row_states(r), int(values[b][r])) for b, r in enumerate(rows)]

    def solve_class(self, device: DeviceClass, found: tuple | None | bool = False, budget: Budget | None = None,
                    caps: Caps | None = None) -> tuple[DeviceSolution | None, str | None]:
        """(solution, None), or (None, why nothing fits); `found`: the answer when already looked up."""
        start = time.perf_counter()
        budget = budget_of(device) if budget is None else budget
        caps = self.caps(budget) if caps is None else caps
        found = self.answer(caps) if found is False else found
        if found is None:
            return None, self.infeasible_message(device.name, budget)
        cost = self.checked(found[0], found[1], device.name)
        solution = solution_for(found[0], found[1], cost, device, self.profile, self.goal, self.contiguous, budget,
                                caps, self.unconstrained(), time.perf_counter() - start)
        return solution, None

    def solve(self, device: DeviceClass) -> DeviceSolution:
        solution, reason = self.solve_class(device)
        if solution is None:
            raise InfeasibleError(reason)
        return solution

    def least(self, name: str, caps: Caps) -> tuple[tuple[str, ...], int] | None:
        """(a configuration of least `name` within the caps, its value), or None: of the configurations of least
        value, the first in answer order. Off the whole frontier where it is built; else in two passes: the
        least value (_least_value), then the class's answer under the caps with `name` capped at it (every
        configuration within those caps has exactly that value, so their answer is the first in answer order)."""
        b = BUDGET_NAMES.index(name)
        if self.frontier is None:
            value = self._least_value(b, caps)
            if value is None:
                return None
            found = self.answer(tuple(value if i == b else c for i, c in enumerate(caps)))
            return found[0], value  # not None: the configuration of least value fits these caps
        rows = self.frontier
        values = rows.budget_values
        mask = rows.fitting(*caps)
        if not mask.any():
            return None
        index = np.flatnonzero(mask)
        row = int(index[np.argmin(values[b][index])])
        return self.row_states(row), int(values[b][row])

    def _least_value(self, b: int, caps: Caps) -> int | None:
        """The least of budget b (index into BUDGET_NAMES) any configuration within the caps needs, or None: the
        class's programme with the objective set aside (a row is then dropped by any other no worse in every
        cost, so few stay; the least value survives, since whatever dominates a row needs no more of anything),
        its caps tightened to a configuration known to fit (the standard ones, answers found so far)."""
        known = self._known_within(caps)
        if len(known):
            caps = tuple(min(c, int(min(known[:, 1 + b]))) if i == b else c for i, c in enumerate(caps))
        if self._costs_only is None:
            goal = replace(self.goal, state_weights=tuple({} for _ in self.goal.state_weights), params_weight=0)
            self._costs_only = (goal, SuffixBound(self.profile, goal))
        goal, suffix = self._costs_only
        rows = build_frontier(self.profile, goal, self.contiguous, Bound(caps, 0, suffix), row_limit=None)
        values = rows.budget_values[b][rows.fitting(*caps)]
        return int(values.min()) if len(values) else None

    def infeasible_message(self, device_name: str, budget: Budget, least: list | None = None) -> str:
        """Name the budget no configuration meets and the least it needs, with the other budgets held
        (`least`: per budget the cheapest (states, value) within the other two, when already looked up)."""
        caps = self.caps(budget)
        if least is None:
            least = [self.least(name, tuple(NO_CAP if j == i else c for j, c in enumerate(caps)))
                     for i, name in enumerate(BUDGET_NAMES)]
        needs = []
        for name, cheapest in zip(BUDGET_NAMES, least):
            if cheapest is not None:
                needs.append(f"the cheapest plan ({describe(cheapest[0])}) needs {self._amount(name, cheapest[1], budget)}; "
                             f"the budget is {format_quantity(name, budget.limit(name))}; raise {BUDGET_FIELDS[name]}")
        if needs:
            return f"{device_name}: " + "; or: ".join(needs) + " (or pick a smaller model)"
        alone = {name: self.least(name, (NO_CAP,) * 3)[1] for name in BUDGET_NAMES}
        over = [n for n in BUDGET_NAMES if self._value(n, alone[n], budget) > budget.limit(n)] or list(BUDGET_NAMES)
        over = [f"{n} needs {self._amount(n, alone[n], budget)} (budget {format_quantity(n, budget.limit(n))})"
                for n in over]
        return (f"{device_name}: no plan meets the budgets together; at the least " + ", ".join(over)
                + "; raise the budgets in the device file or pick a smaller model")

    def _value(self, name: str, value: int, budget: Budget) -> int:
        if name == COMPUTE:
            return flops_per_round(value, budget.samples_per_round, self.profile.context.batch_size)
        return value

    def _amount(self, name: str, value: int, budget: Budget) -> str:
        return format_quantity(name, self._value(name, value, budget))


def solve_device(profile: ModelProfile, device, objective: str = "layers", contiguous: bool = False,
                 importance: tuple[float, ...] | None = None) -> DeviceSolution:
    """The best configuration of `profile` for one device class; InfeasibleError when none fits.

    Among configurations with the best objective the smallest predicted peak wins, then the fewest FLOPs, the
    least upload and the fewest kept bytes, then the first in the profile's state order from block 0, so the
    answer is unique (the answer order of solve/frontier.py)."""
    return ProfilePlanner(profile, objective, contiguous, importance).solve(device)
