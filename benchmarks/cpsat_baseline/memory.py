"""The memory side of the CP-SAT model: compose.peak_events stated as linear constraints over option literals.

Each event of compose.peak_events becomes one linear expression, with the same terms in the same places:
  forward of part k   resident + kept(parts < k) + one hidden state + held(k) + forward_extra(k)
  backward of part k  resident + kept(parts <= k) + grads(parts > k) + one hidden gradient + backward_extra(k)
  optimizer step      resident + all grads + step_extra (one event per part: the max is their largest)
Shared terms get auxiliary variables stated with exact equalities (run.py evaluates the event expressions
from solver values, so every auxiliary must equal what compose computes, not merely bound it):
- kept_boundary[b]: the hidden state entering block b is kept (its producer saves its output or the block
  saves its input); it counts once in the kept bytes and removes b from the hidden states held at later blocks.
- shared prefix maxima: the largest size of each shared tensor kept by parts 0..k (add_max_equality).
- held shared bytes: max(0, held size - kept prefix before the block), again with add_max_equality.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ortools.sat.python import cp_model

from budgetplan.profile.types import FROZEN_OUTSIDE, ModelProfile, PartCost


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
class Kept:
    """What the parts keep for backward, as the events need it."""

    prefix: list  # sum(kept[: k + 1]) of compose.kept_bytes_per_part, per part k
    boundary: list  # kept_boundary[b] for the hidden state entering block b (0/1 constant or literal)
    shared: dict  # shared tensor name -> per part k, the largest size parts 0..k keep


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


def int_var(model, expr, bound: int, name: str):
    """An integer variable equal to expr: events share these sums instead of repeating hundreds of terms,
    which keeps presolve fast."""
    var = model.new_int_var(0, bound, name)
    model.add(var == expr)
    return var


def kept_terms(model, profile: ModelProfile, parts: list[Part], bound: int) -> Kept:
    """compose.kept_bytes_per_part as prefix sums, with the boundary literals and shared maxima it uses."""
    names = sorted({n for p in parts for o in p.options for n in o.cost.shared_saved_bytes})
    shared = {name: _shared_prefix_max(model, parts, name) for name in names}
    boundary = [_either_saves(model, parts[k - 1], parts[k]) for k in range(1, len(parts))]
    prefix, running = [], 0
    for k, part in enumerate(parts):
        own = part.total(lambda o: o.cost.activation_bytes)
        if k > 0:
            own += profile.boundary_bytes * boundary[k - 1]
        running = int_var(model, running + own, bound, f"kept_{part.label}")
        prefix.append(running + sum(s[k] for s in shared.values()))
    return Kept(prefix, boundary, shared)


def _held_shared(model, kept: Kept, sizes: dict[str, int], k: int, label: str):
    """sum over held shared tensors of max(0, size - what parts before k keep), as compose.held_bytes."""
    total = 0
    for name, size in sorted(sizes.items()):
        before = kept.shared[name][k - 1] if name in kept.shared else 0
        if isinstance(before, int):
            total += max(0, size - before)
            continue
        extra = model.new_int_var(0, size, f"held_{name}_{label}")
        model.add_max_equality(extra, [0, size - before])
        total += extra
    return total


def held_term(model, profile: ModelProfile, kept: Kept, k: int, label: str):
    """compose.held_bytes(profile, parts, k): bytes the forward code holds at part k's start beyond the kept."""
    block = k - 1
    if not 0 <= block < len(profile.held_hidden):
        return 0
    dropped = [1 - kept.boundary[b] for b in profile.held_hidden[block] if b != block]
    hidden = profile.boundary_bytes * sum(dropped)
    shared = _held_shared(model, kept, profile.held_shared_bytes[block], k, label)
    return hidden + shared + profile.held_other_bytes[block]


def held_bound(profile: ModelProfile) -> int:
    """The largest held(k) can be, over every block and configuration."""
    return max((len(h) * profile.boundary_bytes + sum(s.values()) + o
                for h, s, o in zip(profile.held_hidden, profile.held_shared_bytes, profile.held_other_bytes)),
               default=0)


def peak_bound(profile: ModelProfile, parts: list[Part]) -> int:
    """An upper bound on every event of every configuration (sums of per-part maxima)."""
    c = lambda o: o.cost  # noqa: E731
    per_part = sum(p.largest(lambda o: o.adapter_bytes + c(o).optimizer_state_bytes + c(o).activation_bytes
                             + c(o).trainable_bytes + sum(c(o).shared_saved_bytes.values())) for p in parts)
    extras = max(p.largest(lambda o: max(c(o).forward_extra_bytes, c(o).backward_extra_bytes, c(o).step_extra_bytes))
                 for p in parts)
    return (profile.resident_bytes + per_part + profile.boundary_bytes * (len(parts) + 1) + extras
            + held_bound(profile))


def _grads(model, parts: list[Part], bound: int):
    """Per part k, gradient bytes of the parts after k (built from the top), and all gradient bytes."""
    later = [0]
    for part in reversed(parts[1:]):
        later.insert(0, int_var(model, later[0] + part.total(lambda o: o.cost.trainable_bytes), bound,
                                f"grads_after_{part.label}"))
    return later, later[0] + parts[0].total(lambda o: o.cost.trainable_bytes)


def _events(model, profile: ModelProfile, parts: list[Part], bound: int) -> list:
    """(live bytes, literal that switches the event off or None) for every event of compose.peak_events."""
    kept = kept_terms(model, profile, parts, bound)
    hidden = profile.boundary_bytes
    later_grads, all_grads = _grads(model, parts, bound)
    resident = int_var(model, profile.resident_bytes + sum(
        p.total(lambda o: o.adapter_bytes + o.cost.optimizer_state_bytes) for p in parts), bound, "resident")
    events = []
    for k, part in enumerate(parts):
        before = kept.prefix[k - 1] + hidden + held_term(model, profile, kept, k, part.label) if k > 0 else 0
        events.append((resident + before + part.total(lambda o: o.cost.forward_extra_bytes), None))
    for k, part in enumerate(parts):
        off = _no_backward(part)
        if isinstance(off, int):  # the part never runs backward
            continue
        grad_in = hidden if k < len(parts) - 1 else 0
        live = resident + kept.prefix[k] + later_grads[k] + grad_in + part.total(lambda o: o.cost.backward_extra_bytes)
        events.append((live, off))
    events += [(resident + all_grads + p.total(lambda o: o.cost.step_extra_bytes), None) for p in parts]
    return events


def add_memory(model, profile: ModelProfile, parts: list[Part], cap, bound: int):
    """One linear constraint per event of compose.peak_events, each also a lower bound of the peak variable."""
    events = _events(model, profile, parts, bound)
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
