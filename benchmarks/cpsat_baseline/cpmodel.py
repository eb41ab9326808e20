"""The CP-SAT model of one model profile's configurations, built data -> variables -> constraints -> objective.

Variables: a boolean per (block, state, boundary) option, exactly one per block; a boolean grad[i] per
block input, "some part below block i is trainable". The gradient path is linear: the options with an input
gradient sum to grad[i], and grad[i + 1] = grad[i] OR trainable(i). frozen_outside exists only without and
frozen_in_path only with an input gradient, so a block is frozen_outside exactly when nothing below it
trains, and a trainable block uses its no-input-gradient cost exactly when it is the lowest one.

Every quantity of compose() is then a linear expression over the option booleans; the two shared terms of
the kept bytes get auxiliary variables (see solve/memory.py). Budgets are variables whose domain is fixed
before each solve, so one built model serves every device class of a fleet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

from ortools.sat.python import cp_model

from budgetplan.errors import PlanError
from budgetplan.profile.types import (
    FROZEN_IN_PATH,
    FROZEN_OUTSIDE,
    INPUT_GRAD,
    NO_INPUT_GRAD,
    TRAINED,
    ModelProfile,
    boundaries_of,
    is_trainable,
)
from budgetplan.solve.caps import BUDGET_NAMES, COMPUTE, MEMORY, UPLOAD
from cpsat_baseline.memory import Option, Part, add_memory, peak_bound
from budgetplan.solve.objective import Objective

# With primary x weight + peak below this, one solve is exact (CP-SAT's LP works in doubles); above it
# the solver maximises the primary objective first, then minimises the peak with the primary held.
LEXICOGRAPHIC_LIMIT = 2**53


@dataclass(frozen=True)
class StateModel:
    """A built CP-SAT model; solve.run fixes the budget variables and the objective, then solves."""

    model: cp_model.CpModel
    parts: tuple[Part, ...]  # pre, the blocks, post
    trainable: tuple[cp_model.LinearExpr, ...]  # per block, 1 when trained or LoRA
    caps: dict[str, cp_model.IntVar]  # budget name -> variable fixed per solve
    cap_bounds: dict[str, int]  # budget name -> largest value the quantity can take
    peak: cp_model.IntVar  # >= every event that happens (equal to the largest when minimised)
    events: tuple  # (live bytes, literal that switches the event off, or None)
    flops_per_step: cp_model.LinearExpr
    upload_bytes: cp_model.LinearExpr
    trainable_params: cp_model.LinearExpr
    primary: cp_model.LinearExpr  # the objective, scaled to integers
    primary_floor: cp_model.IntVar  # primary >= this; raised for the second, tie-breaking solve
    primary_ceiling: cp_model.IntVar  # primary <= this; lowered where a looser budget's answer bounds it
    lexicographic_weight: int | None  # primary x weight - peak in one solve; None: two solves
    # The last tie-break, making every answer unique: (variable, largest value) per chunk of blocks, each the
    # blocks' state indices (the profile's state order) read as base-n digits, block 0 most significant.
    ties: tuple = ()
    primary_bound: int = 0  # the largest the primary objective can be

    def quantity(self, name: str) -> cp_model.LinearExpr:
        return {MEMORY: self.peak, COMPUTE: self.flops_per_step, UPLOAD: self.upload_bytes}[name]

    def peak_bytes(self, value: Callable, boolean_value: Callable) -> int:
        """The largest event of a solution (exact even where the solver stopped before minimising the peak)."""
        return max(value(live) for live, off in self.events if off is None or not boolean_value(off))

    def block_states(self, value: Callable) -> tuple[str, ...]:
        return tuple(next(o.state for o, lit in zip(p.options, p.literals) if value(lit)) for p in self.parts[1:-1])


def _block_options(block, allowed: tuple[str, ...]) -> tuple[Option, ...]:
    try:
        base = {NO_INPUT_GRAD: block.states[FROZEN_OUTSIDE][NO_INPUT_GRAD].param_bytes,
                INPUT_GRAD: block.states[FROZEN_IN_PATH][INPUT_GRAD].param_bytes}
    except KeyError:
        raise PlanError(f"profile block {block.index} lacks a frozen state cost; regenerate the profile") from None
    return tuple(
        Option(state, boundary, block.states[state][boundary], block.states[state][boundary].param_bytes - base[boundary])
        for state in allowed if state in block.states
        for boundary in boundaries_of(state) if boundary in block.states[state]
    )


def _pre_part(profile: ModelProfile) -> Part:
    state = TRAINED if profile.context.train_embeddings else FROZEN_OUTSIDE
    cost = profile.pre[state][NO_INPUT_GRAD]
    adapter = cost.param_bytes - profile.pre[FROZEN_OUTSIDE][NO_INPUT_GRAD].param_bytes
    return Part("pre", (Option(state, NO_INPUT_GRAD, cost, adapter),), (1,))


def _gradient_path(model, profile: ModelProfile, contiguous: bool):
    """Option variables per block, linked by the gradient path; returns (block parts, grad, trainable)."""
    allowed = profile.block_state_names
    if contiguous:  # CAFF: the last k blocks fully trained, no LoRA
        allowed = tuple(s for s in allowed if s in (FROZEN_OUTSIDE, FROZEN_IN_PATH, TRAINED))
    grad = [model.new_bool_var("grad_0")]
    model.add(grad[0] == int(profile.context.train_embeddings))
    parts, trainable = [], []
    for block in profile.blocks:
        options = _block_options(block, allowed)
        lits = tuple(model.new_bool_var(f"b{block.index}_{o.state}_{o.boundary}") for o in options)
        model.add_exactly_one(lits)
        model.add(sum(l for o, l in zip(options, lits) if o.boundary == INPUT_GRAD) == grad[-1])
        t = sum(l for o, l in zip(options, lits) if is_trainable(o.state))
        after = model.new_bool_var(f"grad_{block.index + 1}")
        model.add(after >= grad[-1])
        model.add(after >= t)
        model.add(after <= grad[-1] + t)
        if contiguous and trainable:
            model.add(trainable[-1] <= t)
        parts.append(Part(f"block {block.index}", options, lits))
        trainable.append(t)
        grad.append(after)
    return parts, grad, trainable


def _post_part(profile: ModelProfile, grad_out) -> Part:
    options = tuple(Option(TRAINED, b, profile.post[b], 0) for b in (INPUT_GRAD, NO_INPUT_GRAD))
    return Part("post", options, (grad_out, ~grad_out))


def _tie_break(model, blocks: list[Part]) -> tuple:
    """Chunks of the state-index number of a configuration, each below LEXICOGRAPHIC_LIMIT (see StateModel.ties)."""
    orders = [list(dict.fromkeys(o.state for o in part.options)) for part in blocks]
    base = max(len(order) for order in orders)
    per_chunk = max(1, int(math.log(LEXICOGRAPHIC_LIMIT, base)) - 1) if base > 1 else len(blocks)
    ties = []
    for start in range(0, len(blocks), per_chunk):
        chunk = list(zip(blocks, orders))[start:start + per_chunk]
        digits = [base ** (len(chunk) - 1 - i) for i in range(len(chunk))]
        expr = sum(part.total(lambda o, d=d, order=order: d * order.index(o.state))
                   for d, (part, order) in zip(digits, chunk))
        bound = sum(d * (base - 1) for d in digits)
        var = model.new_int_var(0, bound, f"tie_{start}")
        model.add(var == expr)
        ties.append((var, bound))
    return tuple(ties)


def build_state_model(profile: ModelProfile, objective: Objective, contiguous: bool = False) -> StateModel:
    """Data -> variables -> constraints -> objective for one profile; budgets are set by solve.run."""
    if profile.num_blocks == 0:
        raise PlanError("the profile has no blocks; regenerate it with 'budgetplan profile MODEL --json PATH'")
    model = cp_model.CpModel()
    blocks, grad, trainable = _gradient_path(model, profile, contiguous)
    parts = [_pre_part(profile), *blocks, _post_part(profile, grad[-1])]
    flops = sum(p.total(lambda o: o.cost.flops_forward + o.cost.flops_backward) for p in parts)
    upload = sum(p.total(lambda o: o.cost.trainable_bytes) for p in parts)
    bounds = {MEMORY: peak_bound(profile, parts),
              COMPUTE: sum(p.largest(lambda o: o.cost.flops_forward + o.cost.flops_backward) for p in parts),
              UPLOAD: sum(p.largest(lambda o: o.cost.trainable_bytes) for p in parts)}
    caps = {name: model.new_int_var(0, bounds[name], f"{name}_cap") for name in BUDGET_NAMES}
    peak, events = add_memory(model, profile, parts, caps[MEMORY], bounds[MEMORY])
    model.add(flops <= caps[COMPUTE])
    model.add(upload <= caps[UPLOAD])
    params = sum(p.total(lambda o: o.cost.trainable_params) for p in parts)
    earned = [p.total(lambda o, w=w: w.get(o.state, 0)) for p, w in zip(blocks, objective.state_weights)]
    primary = sum(earned) + objective.params_weight * params
    primary_bound = sum(max(w.values(), default=0) for w in objective.state_weights) + objective.params_weight * sum(
        p.largest(lambda o: o.cost.trainable_params) for p in parts)
    floor = model.new_int_var(0, primary_bound, "primary_floor")
    model.add(primary >= floor)
    ceiling = model.new_int_var(0, primary_bound, "primary_ceiling")
    model.add(primary <= ceiling)
    weight = bounds[MEMORY] + 1
    lexicographic = weight if (primary_bound + 1) * weight < LEXICOGRAPHIC_LIMIT else None
    return StateModel(model, tuple(parts), tuple(trainable), caps, bounds, peak, tuple(events), flops, upload,
                      params, primary, floor, ceiling, lexicographic, _tie_break(model, blocks), primary_bound)
