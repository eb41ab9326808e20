"""The CP-SAT model of one model profile's configurations, built data -> variables -> constraints -> objective.

Variables: a boolean per (block, state, boundary) option, exactly one per block; a boolean grad[i] per
block input, "some part below block i is trainable". The gradient path is linear: the options with an input
gradient sum to grad[i], and grad[i + 1] = grad[i] OR trainable(i). frozen_outside exists only without and
frozen_in_path only with an input gradient, so a block is frozen_outside exactly when nothing below it
trains, and a trainable block uses its no-input-gradient cost exactly when it is the lowest one.

Every quantity of compose() is then a linear expression over the option booleans; the two shared terms of
the kept bytes get auxiliary variables (see _kept_prefix). Budgets are variables whose domain is fixed
before each solve, so one built model serves every device class of a fleet.
"""

from __future__ import annotations

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
    PartCost,
    boundaries_of,
    is_trainable,
)
from budgetplan.solve.budget import BUDGET_NAMES, COMPUTE, MEMORY, UPLOAD
from budgetplan.solve.objective import Objective

# With primary x weight + peak below this, one solve is exact (CP-SAT's LP works in doubles); above it
# the solver maximises the primary objective first, then minimises the peak with the primary held.
LEXICOGRAPHIC_LIMIT = 2**53


@dataclass(frozen=True)
class Option:
    """One (state, boundary) a part can take, with its cost."""

    state: str
    boundary: str
    cost: PartCost
    adapter_bytes: int  # parameter bytes beyond the frozen base weights (LoRA adapters)


@dataclass(frozen=True)
class Part:
    label: str
    options: tuple[Option, ...]
    literals: tuple  # one per option: a BoolVar, a negated BoolVar or the constant 1

    def total(self, value: Callable[[Option], int]) -> cp_model.LinearExpr:
        return cp_model.LinearExpr.weighted_sum(list(self.literals), [int(value(o)) for o in self.options])

    def largest(self, value: Callable[[Option], int]) -> int:
        return max(int(value(o)) for o in self.options)


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
    lexicographic_weight: int | None  # primary x weight - peak in one solve; None: two solves

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


def _either_saves(model, producer: Part, consumer: Part):
    """1 when the producer keeps its output or the consumer keeps its input (the boundary is kept once)."""
    out = [int(o.cost.saves_output) for o in producer.options]
    inp = [int(o.cost.saves_input) for o in consumer.options]
    if min(out) == 1 or min(inp) == 1:
        return 1
    if max(out) == 0 and max(inp) == 0:
        return 0
    kept = model.new_bool_var(f"kept_boundary_{consumer.label}")
    saves_out = producer.total(lambda o: o.cost.saves_output)
    saves_in = consumer.total(lambda o: o.cost.saves_input)
    model.add(kept >= saves_out)
    model.add(kept >= saves_in)
    model.add(kept <= saves_out + saves_in)
    return kept


def _shared_prefix_max(model, parts: list[Part], name: str) -> list:
    """Bytes of shared tensor `name` kept by parts 0..k (the largest any of them saves), for each k."""
    prefix, running, bound = [], 0, 0
    for part in parts:
        sizes = [o.cost.shared_saved_bytes.get(name, 0) for o in part.options]
        bound = max(bound, *sizes)
        if isinstance(running, int) and len(set(sizes)) == 1:
            running = max(running, sizes[0])
        elif max(sizes) > 0:
            new = model.new_int_var(0, bound, f"shared_{name}_{part.label}")
            model.add_max_equality(new, [running, part.total(lambda o: o.cost.shared_saved_bytes.get(name, 0))])
            running = new
        prefix.append(running)
    return prefix


def _int(model, expr, bound: int, name: str):
    """An integer variable equal to expr: events share these sums instead of repeating hundreds of terms,
    which keeps presolve fast."""
    var = model.new_int_var(0, bound, name)
    model.add(var == expr)
    return var


def _kept_prefix(model, profile: ModelProfile, parts: list[Part], bound: int) -> list:
    """sum(kept[: k + 1]) of compose.kept_bytes_per_part, for each part k."""
    names = sorted({n for p in parts for o in p.options for n in o.cost.shared_saved_bytes})
    shared = [_shared_prefix_max(model, parts, name) for name in names]
    prefix, running = [], 0
    for k, part in enumerate(parts):
        own = part.total(lambda o: o.cost.activation_bytes)
        if k > 0:
            own += profile.boundary_bytes * _either_saves(model, parts[k - 1], part)
        running = _int(model, running + own, bound, f"kept_{part.label}")
        prefix.append(running + sum(s[k] for s in shared))
    return prefix


def _peak_bound(profile: ModelProfile, parts: list[Part]) -> int:
    """An upper bound on every event of every configuration (sums of per-part maxima)."""
    c = lambda o: o.cost  # noqa: E731
    per_part = sum(p.largest(lambda o: o.adapter_bytes + c(o).optimizer_state_bytes + c(o).activation_bytes
                             + c(o).trainable_bytes + sum(c(o).shared_saved_bytes.values())) for p in parts)
    extras = max(p.largest(lambda o: max(c(o).forward_extra_bytes, c(o).backward_extra_bytes, c(o).step_extra_bytes))
                 for p in parts)
    return profile.resident_bytes + per_part + profile.boundary_bytes * (len(parts) + 1) + extras


def _add_memory(model, profile: ModelProfile, parts: list[Part], cap, bound: int):
    """One linear constraint per event of compose.peak_events, each also a lower bound of the peak variable."""
    kept = _kept_prefix(model, profile, parts, bound)
    hidden = profile.boundary_bytes
    later_grads = [0]  # gradient bytes of parts after k, built from the top
    for part in reversed(parts[1:]):
        later_grads.insert(0, _int(model, later_grads[0] + part.total(lambda o: o.cost.trainable_bytes), bound,
                                   f"grads_after_{part.label}"))
    all_grads = later_grads[0] + parts[0].total(lambda o: o.cost.trainable_bytes)
    resident = _int(model, profile.resident_bytes + sum(
        p.total(lambda o: o.adapter_bytes + o.cost.optimizer_state_bytes) for p in parts), bound, "resident")
    events = []  # (live bytes, literal that switches the event off or None)
    for k, part in enumerate(parts):
        before = kept[k - 1] + hidden if k > 0 else 0
        events.append((resident + before + part.total(lambda o: o.cost.forward_extra_bytes), None))
    for k, part in enumerate(parts):
        off = _no_backward(part)
        if isinstance(off, int):  # the part never runs backward
            continue
        grad_in = hidden if k < len(parts) - 1 else 0
        live = resident + kept[k] + later_grads[k] + grad_in + part.total(lambda o: o.cost.backward_extra_bytes)
        events.append((live, off))
    events += [(resident + all_grads + p.total(lambda o: o.cost.step_extra_bytes), None) for p in parts]
    peak = model.new_int_var(0, bound, "peak_bytes")
    for live, off in events:
        within_budget = model.add(live <= cap)
        below_peak = model.add(live <= peak)
        if off is not None:
            within_budget.only_enforce_if(~off)
            below_peak.only_enforce_if(~off)
    # peak >= every event; minimising it (the tie-break) makes it the largest. Stating peak = max exactly
    # (add_max_equality over these long sums) made presolve 100x slower; run.py reads the exact max.
    return peak, events


def _no_backward(part: Part):
    """compose.has_backward negated: 1 (never runs backward), None (always does) or the frozen_outside literal."""
    if part.label == "post":
        return None
    for option, lit in zip(part.options, part.literals):
        if option.state == FROZEN_OUTSIDE:
            return 1 if len(part.options) == 1 else lit
    return None


def build_state_model(profile: ModelProfile, objective: Objective, contiguous: bool = False) -> StateModel:
    """Data -> variables -> constraints -> objective for one profile; budgets are set by solve.run."""
    if profile.num_blocks == 0:
        raise PlanError("the profile has no blocks; regenerate it with 'budgetplan profile MODEL --json PATH'")
    model = cp_model.CpModel()
    blocks, grad, trainable = _gradient_path(model, profile, contiguous)
    parts = [_pre_part(profile), *blocks, _post_part(profile, grad[-1])]
    flops = sum(p.total(lambda o: o.cost.flops_forward + o.cost.flops_backward) for p in parts)
    upload = sum(p.total(lambda o: o.cost.trainable_bytes) for p in parts)
    bounds = {MEMORY: _peak_bound(profile, parts),
              COMPUTE: sum(p.largest(lambda o: o.cost.flops_forward + o.cost.flops_backward) for p in parts),
              UPLOAD: sum(p.largest(lambda o: o.cost.trainable_bytes) for p in parts)}
    caps = {name: model.new_int_var(0, bounds[name], f"{name}_cap") for name in BUDGET_NAMES}
    peak, events = _add_memory(model, profile, parts, caps[MEMORY], bounds[MEMORY])
    model.add(flops <= caps[COMPUTE])
    model.add(upload <= caps[UPLOAD])
    params = sum(p.total(lambda o: o.cost.trainable_params) for p in parts)
    primary = sum(w * t for w, t in zip(objective.block_weights, trainable) if w) + objective.params_weight * params
    primary_bound = sum(objective.block_weights) + objective.params_weight * sum(
        p.largest(lambda o: o.cost.trainable_params) for p in parts)
    floor = model.new_int_var(0, primary_bound, "primary_floor")
    model.add(primary >= floor)
    weight = bounds[MEMORY] + 1
    lexicographic = weight if (primary_bound + 1) * weight < LEXICOGRAPHIC_LIMIT else None
    return StateModel(model, tuple(parts), tuple(trainable), caps, bounds, peak, tuple(events), flops, upload,
                      params, primary, floor, lexicographic)
