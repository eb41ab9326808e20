"""The configuration frontier of one profile: the few configurations that can be some device class's answer.

A dynamic programme over the parts in forward order, whose step is compose.advance run on numpy arrays of
partial configurations (the same arithmetic as compose(), so a row's costs are compose's costs). What a
later part can observe of a prefix is its obligations (whether gradient flows into the next block, whether
the last part keeps its output and the bytes of its extra outputs it does not keep, which hidden states that
later blocks hold are kept, and for --contiguous whether a block trains already) and a few running amounts: the
kept bytes, each shared input's kept size, and for the final costs the sums (adapter and optimizer bytes,
gradient bytes, FLOPs, the objective) and the largest forward / backward / optimizer-step event so far. A
partial configuration is dropped when another
- has the same obligations, and
- is no worse in every amount: no more kept, adapter, optimizer, gradient bytes and FLOPs, no larger event
  so far, and *at least* the kept size of each shared input (a later part that keeps or holds a shared input
  of n bytes adds max(0, n - kept size): more kept already means less added later), and
- comes first in the priority order: a higher objective; at the same objective, fewer FLOPs, then fewer gradient
  bytes, then fewer kept bytes (the sums the answer order reads after the peak); then earlier in state order.
Every event of compose.peak_events is non-decreasing in each of these (in the direction given), hence the
same completion of the other partial configuration fits whenever the dropped one's does, and comes earlier in
the answer order: its objective is no lower and its peak no higher; where both tie, its FLOPs, upload and kept
bytes are each no larger (sums: a difference in the prefix stays in every completion), so it is earlier unless
all three tie too, and then the prefixes' state order decides as the priority order did. No answer is lost.
Reading the sums before the state order matters: an event difference may vanish in a completion (a later,
larger event sets the peak) while a sum difference never does, so prefixes that are permutations of each other
(equal sums, different events) no longer all stay for the sake of a state-order tie (4x fewer rows at
SmolLM2's widest block; docs/benchmarks.md, issue 22).

Fewer distinct rows (_prune): the largest forward and backward events so far enter the comparison as
max(event, kept + floor), where the floor is at most some later part's own event above the prefix's kept bytes,
which every completion has (_next_floors: the next part's forward event holds the kept bytes, the hidden state
entering it and at least its least forward extra; where gradient flows, its backward event holds at least its
activations and backward extra; a backward event so far is compared less the next part's gradient bytes, which
it gains in the same step; and since kept bytes only grow, every later part's forward event, the head's
included, floors the forward events too: later_forward_floors. A language model's logits make that floor
large, so rows that differ only in smaller events merge). An event below that floor never sets the peak, so
replacing it by the floor changes no completion's peak, and two rows that differ only in such events are equal
(the first in answer order stays).

Complete configurations are then kept only if no other is at least as good in objective, peak, FLOPs and
upload and comes first in the answer order (higher objective, then lower peak, fewer FLOPs, less upload, fewer
kept bytes, then state order: the comment above Frontier).
The answer for any caps is the first row, in that order, that fits. Proof by construction, not by a solver
status; the planner still re-composes every answer with compose() before returning it (solve/planner.py).

Per class (a Bound): rows whose costs so far already pass a cap are dropped (costs only grow), and rows whose
objective plus the most the remaining parts can add within what is left of each budget (solve/bounds.py, an
upper bound) is below an objective some configuration within the caps reaches: neither can be the answer. The
largest of those upper bounds among the dropped rows is reported (Frontier.most_dropped): no configuration
outside the rows reaches more, which tightens the planner's next guess.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace

import numpy as np

from budgetplan.profile.compose import (
    FROZEN,
    Prefix,
    advance,
    place_block,
    place_post,
    place_pre,
    peak_of,
)
from budgetplan.profile.types import FROZEN_IN_PATH, FROZEN_OUTSIDE, INPUT_GRAD, NO_INPUT_GRAD, TRAINED, \
    ModelProfile, boundaries_of, is_trainable
from budgetplan.solve.bounds import SuffixBound
from budgetplan.solve.dominance import lex_rank, undominated
from budgetplan.solve.objective import Objective

# Partial configurations alive after any block beyond which the planner stops building one frontier for all
# classes and runs the same programme per class, pruned by that class's caps (still exact, see planner.py).
ROW_LIMIT = 500
PROJECT_FROM = 4  # blocks placed before the growth of the partial rows is projected (see _projected)
# A fleet answers all its classes from one frontier, so a larger one pays, the more so the more classes: with
# at least FLEET_CLASSES distinct budgets the limit is FLEET_ROW_LIMIT x (budgets / FLEET_CLASSES) ** FLEET_GROWTH.
# Measured on this project's 2 cores (BERT-style blocks with +recompute states, 7 per block, CPU time, after the
# sums-first answer order and the column-narrowed dominance filter of 2026-12-06): whole frontiers of 16, 20, 24,
# 28, 32 blocks reach 13.6k, 29k, 57k, 100k, 167k partial rows in 0.57, 1.5, 3.8, 8.0, 18.7 s (time ~ rows ** 1.46),
# while one class's pruned programme takes ~0.1 s at 24-32 blocks: the break-even is ~36k rows at 20 classes,
# ~530k at 1,000.
FLEET_ROW_LIMIT = 36_000
FLEET_GROWTH = 0.7
FLEET_CLASSES = 20
_AMOUNTS = ("kept_bytes", "resident_extra_bytes", "grad_bytes", "forward_live", "backward_live", "step_extra_bytes",
            "flops_forward", "flops_backward", "trainable_params", "optimizer_state_bytes")
INT64_SAFE = 2**62


def _projected(history: list[int], blocks: int) -> float:
    """The partial rows expected after the last block from history[k] = rows alive after k blocks: growth like
    placed**e, with e measured between placed / 2 and placed blocks from 2 * PROJECT_FROM blocks on (5 states:
    (placed + 1)**2 exactly, e < 2; +recompute states e ~ 3), before that e = 2; nothing before PROJECT_FROM.
    A frontier bound to pass the limit is given up early. Only chooses the mode; the answers are the same."""
    placed, alive = len(history) - 1, history[-1]
    if placed < PROJECT_FROM:
        return alive
    growth = math.log(alive / history[placed // 2]) / math.log(placed / (placed // 2)) if placed >= 2 * PROJECT_FROM \
        else 2.0
    return alive * (blocks / placed) ** max(growth, 0.0)


def row_limit_for(distinct_budgets: int) -> int:
    """The row limit of a frontier that will answer this many distinct budgets (see FLEET_ROW_LIMIT)."""
    if distinct_budgets < FLEET_CLASSES:
        return ROW_LIMIT
    return int(FLEET_ROW_LIMIT * (distinct_budgets / FLEET_CLASSES) ** FLEET_GROWTH)


class FrontierTooLarge(Exception):
    """More partial configurations than the row limit (the planner then works per class)."""


# The answer order. Among configurations within a class's caps, its answer is the first by: the highest
# objective, then the least predicted peak, FLOPs, upload and kept (activation) bytes, then the first in the
# profile's state order from block 0 (unique: no two configurations have the same states).
@dataclass(frozen=True)
class Frontier:
    """Complete configurations in answer order (the comment above)."""

    state_names: tuple[str, ...]  # the profile's state order; choice holds indices into it
    choice: np.ndarray  # rows x blocks, state indices
    objective: np.ndarray  # integer objective (Objective.scale units)
    peak_bytes: np.ndarray
    flops_per_step: np.ndarray  # forward + backward FLOPs of one profiled batch
    upload_bytes: np.ndarray
    largest_partial_rows: int  # the most partial configurations alive after one block
    build_s: float
    # With a bound: the largest optimistic objective of a row the bound dropped (-inf: none dropped). No
    # configuration within the caps that is not among the rows reaches more (see planner._answer_rows).
    most_dropped: float = -math.inf

    def __len__(self) -> int:
        return len(self.objective)

    @property
    def budget_values(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per row what each budget counts, in caps order: peak, FLOPs of one profiled batch, upload."""
        return self.peak_bytes, self.flops_per_step, self.upload_bytes

    def states(self, row: int) -> tuple[str, ...]:
        return tuple(self.state_names[i] for i in self.choice[row])

    def fitting(self, memory: int | None, compute: int | None, upload: int | None) -> np.ndarray:
        """Mask of the rows within the caps (None: no cap)."""
        mask = np.ones(len(self), dtype=bool)
        for values, cap in ((self.peak_bytes, memory), (self.flops_per_step, compute), (self.upload_bytes, upload)):
            if cap is not None:
                mask &= values <= cap
        return mask

    def best_of_many(self, caps: list[tuple[int, int, int]]) -> list[int | None]:
        """best() for many caps at once (one comparison grid: classes x rows)."""
        if not len(self) or not caps:
            return [None] * len(caps)
        limits = np.array(caps, dtype=object if self.peak_bytes.dtype == object else np.int64)
        mask = ((self.peak_bytes[None, :] <= limits[:, 0:1]) & (self.flops_per_step[None, :] <= limits[:, 1:2])
                & (self.upload_bytes[None, :] <= limits[:, 2:3]))
        rows = np.argmax(mask, axis=1)
        return [int(r) if mask[i, r] else None for i, r in enumerate(rows)]

    def least_of_many(self, caps: list[tuple[int, int, int]], no_cap: int) -> list[list[int | None]]:
        """Per caps, per budget b (memory, FLOPs, upload): the row of least b among the rows within the other
        two caps and b <= no_cap (the first such row in answer order, as argmin takes it), or None."""
        if not caps:
            return []
        values = self.budget_values
        limits = np.array(caps, dtype=object if self.peak_bytes.dtype == object else np.int64)
        fit = [v[None, :] <= limits[:, i:i + 1] for i, v in enumerate(values)]
        out: list[list[int | None]] = [[None] * 3 for _ in caps]
        for b, v in enumerate(values):
            if not len(v):
                continue
            within = fit[(b + 1) % 3] & fit[(b + 2) % 3] & (v <= no_cap)[None, :]
            rows = np.argmin(np.where(within, v[None, :], max(v) + 1), axis=1)
            for i in np.flatnonzero(within[np.arange(len(caps)), rows]):
                out[i][b] = int(rows[i])
        return out

    def best(self, caps: tuple[int, int, int]) -> int | None:
        """The answer for caps (memory, FLOPs per step, upload): the first row that fits, or None."""
        mask = self.fitting(*caps)
        row = int(np.argmax(mask)) if len(mask) else 0
        return row if len(mask) and mask[row] else None


@dataclass(frozen=True)
class _Group:
    """Partial configurations with the same obligations; the Prefix's amounts are arrays, one entry per row."""

    prefix: Prefix
    objective: np.ndarray
    choice: np.ndarray
    started: bool  # --contiguous: some block trains, so every later block must


def _allowed(state: str, group: _Group, contiguous: bool) -> bool:
    boundary = INPUT_GRAD if group.prefix.grad_flows else NO_INPUT_GRAD
    if boundary not in boundaries_of(state):
        return False
    if contiguous:
        return state == TRAINED if group.started else state in (FROZEN_OUTSIDE, FROZEN_IN_PATH, TRAINED)
    return True


def _dtype(profile: ModelProfile, objective: Objective) -> type:
    """int64 while no sum (of costs or of the objective) can reach 2**62, else exact Python ints (object arrays,
    slower)."""
    parts = [profile.pre, profile.post, *(b.states for b in profile.blocks)]
    costs = [c for part in parts for by in part.values() for c in (by.values() if isinstance(by, dict) else [by])]
    total = profile.resident_bytes + profile.boundary_bytes * 4 * (profile.num_blocks + 2) + sum(
        sum(v for v in vars(c).values() if isinstance(v, int) and not isinstance(v, bool))
        + sum(c.shared_saved_bytes.values()) for c in costs)
    total += sum(sum(s.values()) for s in profile.held_shared_bytes) + sum(profile.held_other_bytes)
    score = sum(max(w.values(), default=0) for w in objective.state_weights) + objective.params_weight * total
    return np.int64 if max(total, score) < INT64_SAFE else object


def _start(profile: ModelProfile, objective: Objective, dtype) -> _Group:
    names = sorted({n for b in profile.blocks for by in b.states.values() for c in by.values()
                    for n in c.shared_saved_bytes} | {n for h in profile.held_shared_bytes for n in h}
                   | {n for by in (profile.pre, {"": profile.post}) for p in by.values() for c in p.values()
                      for n in c.shared_saved_bytes})
    zeros = {f: np.zeros(1, dtype=dtype) for f in _AMOUNTS}
    prefix = Prefix(shared={n: np.zeros(1, dtype=dtype) for n in names}, **zeros)
    pre = place_pre(profile)
    prefix = advance(profile, prefix, pre)
    score = np.array([objective.params_weight * pre.cost.trainable_params], dtype=dtype)
    return _Group(prefix, score, np.zeros((1, 0), dtype=np.int16), False)


def _held_later(profile: ModelProfile, placed: int) -> frozenset:
    """Boundaries that a block not placed yet holds (the only kept_boundaries later parts read)."""
    return frozenset(b for block in range(placed, len(profile.held_hidden)) for b in profile.held_hidden[block])


def _key(group: _Group, relevant: frozenset) -> tuple:
    p = group.prefix
    kept = tuple(k if b in relevant else False for b, k in enumerate(p.kept_boundaries))
    return p.grad_flows, bool(p.saves_output), kept, group.started, p.output_extra_bytes


def _extend(profile, group: _Group, index: int, state: int, objective: Objective, relevant) -> _Group:
    name = profile.block_state_names[state]
    part = place_block(profile, index, name, group.prefix.grad_flows)
    prefix = advance(profile, group.prefix, part)
    prefix = replace(prefix, kept_boundaries=_key(replace(group, prefix=prefix), relevant)[2])
    earned = objective.state_weights[index].get(name, 0) + objective.params_weight * part.cost.trainable_params
    choice = np.hstack([group.choice, np.full((len(group.objective), 1), state, dtype=np.int16)])
    return _Group(prefix, group.objective + earned, choice, group.started or is_trainable(name))


def _concat(groups: list[_Group]) -> _Group:
    first = groups[0]
    if len(groups) == 1:
        return first
    join = lambda get: np.concatenate([get(g) for g in groups])  # noqa: E731
    amounts = {f: join(lambda g, f=f: getattr(g.prefix, f)) for f in _AMOUNTS}
    shared = {n: join(lambda g, n=n: g.prefix.shared[n]) for n in first.prefix.shared}
    prefix = replace(first.prefix, shared=shared, **amounts)
    return _Group(prefix, join(lambda g: g.objective), join(lambda g: g.choice), first.started)


def _take(group: _Group, rows: np.ndarray) -> _Group:
    p = group.prefix
    amounts = {f: getattr(p, f)[rows] for f in _AMOUNTS}
    prefix = replace(p, shared={n: v[rows] for n, v in p.shared.items()}, **amounts)
    return _Group(prefix, group.objective[rows], group.choice[rows], group.started)


def _part_costs(profile: ModelProfile, part: int, grad_flows: bool) -> list:
    """The costs block `part` (num_blocks: the head) may have after a prefix where gradient flows or not."""
    boundaries = (INPUT_GRAD,) if grad_flows else (INPUT_GRAD, NO_INPUT_GRAD)
    if part == profile.num_blocks:
        return [profile.post[b] for b in boundaries if b in profile.post]
    boundary = INPUT_GRAD if grad_flows else NO_INPUT_GRAD
    return [by[boundary] for by in profile.blocks[part].states.values() if boundary in by]


def later_forward_floors(profile: ModelProfile) -> dict[bool, list[int]]:
    """Per grad_flows, per blocks placed: the largest over every later part (the head included) of the least
    its forward event holds above the kept bytes (the hidden state entering it and its least forward
    temporaries). Kept bytes only grow, so every completion has an event at least the prefix's kept bytes plus
    this; an earlier forward event below it never sets the peak."""
    floors = {}
    for flows in (False, True):
        out = [0] * (profile.num_blocks + 2)
        for part in reversed(range(profile.num_blocks + 1)):
            costs = _part_costs(profile, part, flows)
            if not flows and part < profile.num_blocks:  # a block between may start the gradient: either boundary
                costs = costs + _part_costs(profile, part, True)
            least = min((c.forward_extra_bytes for c in costs), default=0)
            out[part] = max(out[part + 1], profile.boundary_size(part) + least)
        floors[flows] = out[:-1]
    return floors


def _next_floors(profile: ModelProfile, placed: int, grad_flows: bool, later: dict) -> tuple[int, int | None]:
    """Lower bounds, above the prefix's kept bytes, on an event some later part has in every completion:
    (any event: the next part's forward, or its backward where it surely has one, or any later part's forward
    (later_forward_floors); the backward event less the next part's gradient bytes, or None where the next
    part may run no backward). Parts keep at least activation_bytes."""
    hidden_in, later_forward = profile.boundary_size(placed), later[grad_flows][placed]
    if placed == profile.num_blocks:  # the head: it always runs a backward, with no incoming hidden gradient
        cost = profile.post[INPUT_GRAD if grad_flows else NO_INPUT_GRAD]
        backward = cost.activation_bytes + cost.backward_extra_bytes
        return max(hidden_in + cost.forward_extra_bytes, backward), backward - cost.trainable_bytes
    hidden_out = profile.boundary_size(placed + 1)  # the gradient arriving in its backward
    costs = _part_costs(profile, placed, grad_flows)
    forward = max(hidden_in + min(c.forward_extra_bytes for c in costs), later_forward)
    if not grad_flows:  # the next block may be frozen_outside: no backward of its own
        return forward, None
    backward = hidden_out + min(c.activation_bytes + c.backward_extra_bytes for c in costs)
    return max(forward, backward), hidden_out + min(c.activation_bytes + c.backward_extra_bytes - c.trainable_bytes
                                                    for c in costs)


def _prune(profile: ModelProfile, group: _Group, placed: int, later: dict) -> _Group:
    """Keep the rows no earlier row dominates. The largest forward / backward events so far enter as
    max(event, kept + floor) (_next_floors): an event at or below the next part's own event, which every
    completion has, never sets the peak, so rows that differ only there are equal (the first is kept)."""
    p = group.prefix
    any_event, backward_less_grad = _next_floors(profile, placed, p.grad_flows, later)
    forward = np.maximum(p.forward_live, p.kept_bytes + any_event)
    backward = p.backward_live if backward_less_grad is None else np.maximum(
        p.backward_live, p.kept_bytes + backward_less_grad)
    flops = p.flops_forward + p.flops_backward
    columns = [flops, p.kept_bytes, p.resident_extra_bytes, p.grad_bytes, forward, backward, p.step_extra_bytes,
               *(-p.shared[n] for n in sorted(p.shared))]  # the most selective first
    order = np.lexsort((lex_rank(group.choice), p.kept_bytes, p.grad_bytes, flops, -group.objective))
    keep = undominated(np.column_stack(columns)[order])
    return _take(group, order[keep])


@dataclass(frozen=True)
class Bound:
    """Per-class mode: the caps (memory, FLOPs per step, upload), an objective some configuration within them
    reaches, and the most the blocks not placed yet can still add given what is left of each budget."""

    caps: tuple[int, int, int]
    reached: int
    suffix: SuffixBound


def _clamped(caps: tuple[int, int, int]) -> tuple[int, ...]:
    """Caps no larger than INT64_SAFE: every cost is below it (or the rows hold Python ints), so nothing changes,
    but a cap of 1e26 FLOPs (a fast device, a long round) no longer overflows numpy's int64 comparisons."""
    return tuple(min(int(c), INT64_SAFE) for c in caps)


def _remaining(profile: ModelProfile, p: Prefix, caps: tuple[int, int, int]) -> tuple:
    """What is left of each resource of solve/bounds.py (upload, flops, step, kept) after the placed parts."""
    caps = _clamped(caps)
    memory = caps[0] - profile.resident_bytes - p.resident_extra_bytes
    return (caps[2] - p.grad_bytes, caps[1] - (p.flops_forward + p.flops_backward),
            memory - np.maximum(p.grad_bytes + p.step_extra_bytes, p.backward_live), memory - p.kept_bytes)


def _optimistic(profile: ModelProfile, group: _Group, bound: Bound, placed: int) -> np.ndarray:
    """Per row, at most the objective any completion within the caps reaches (-inf: none fits)."""
    p, caps = group.prefix, _clamped(bound.caps)
    floor = profile.resident_bytes + p.resident_extra_bytes + bound.suffix.rx_floor[placed]  # later int8 saves
    ok = (floor + np.maximum(np.maximum(p.forward_live, p.backward_live), p.grad_bytes + p.step_extra_bytes) <= caps[0])
    ok &= (p.flops_forward + p.flops_backward <= caps[1]) & (p.grad_bytes <= caps[2])
    most = group.objective + bound.suffix.most(placed, _remaining(profile, p, caps))
    return np.where(ok, most, -np.inf)


def most_reachable(profile: ModelProfile, objective: Objective, bound: Bound) -> float:
    """At most the objective any configuration within bound.caps reaches (-inf: none fits)."""
    return float(_optimistic(profile, _start(profile, objective, _dtype(profile, objective)), bound, 0)[0])


def _within(profile: ModelProfile, group: _Group, bound: Bound, placed: int) -> tuple[_Group, float]:
    """Drop rows that exceed a cap already (costs only grow as parts are added) or that cannot reach the
    objective of a configuration known to fit (they can never be the answer: its objective is lower); with
    the largest optimistic objective of a row dropped for the objective (-inf: none)."""
    most = _optimistic(profile, group, bound, placed)
    ok = most >= bound.reached
    if ok.all():
        return group, -math.inf
    return _take(group, np.flatnonzero(ok)), float(np.max(most[~ok]))


def _beam(profile: ModelProfile, groups: list[_Group], bound: Bound, placed: int, width: int) -> list[_Group]:
    """The `width` rows of highest optimistic objective (a heuristic: only ever used to find a row that fits)."""
    scores = [_optimistic(profile, g, bound, placed) for g in groups]
    if sum(len(s) for s in scores) <= width:
        return groups
    threshold = np.sort(np.concatenate(scores))[-width]
    out = []
    for group, score in zip(groups, scores):
        rows = np.flatnonzero(score >= threshold)[:width]
        if len(rows):
            out.append(_take(group, rows))
    return out


def _layer(profile, groups: list[_Group], index: int, objective, contiguous: bool, bound,
           later) -> tuple[list[_Group], float]:
    """The rows after block `index`, and the largest optimistic objective of a row the bound dropped."""
    relevant, dropped = _held_later(profile, index + 1), -math.inf
    buckets: dict[tuple, list[_Group]] = {}
    for group in groups:
        for state, name in enumerate(profile.block_state_names):
            if name == FROZEN or not _allowed(name, group, contiguous):
                continue
            child = _extend(profile, group, index, state, objective, relevant)
            if bound is not None:
                child, most = _within(profile, child, bound, index + 1)
                dropped = max(dropped, most)
            if len(child.objective):
                buckets.setdefault(_key(child, relevant), []).append(child)
    return [_prune(profile, _concat(bucket), index + 1, later) for bucket in buckets.values()], dropped


def build_frontier(profile: ModelProfile, objective: Objective, contiguous: bool = False,
                   bound: Bound | None = None, row_limit: int | None = ROW_LIMIT, beam: int | None = None) -> Frontier:
    """The frontier of every configuration (bound None), or the rows that can answer one class (`bound`).
    FrontierTooLarge when more than `row_limit` partial configurations stay alive after some block. With
    `beam` (and a bound) only that many rows of highest optimistic objective stay after each block: the
    result is then not the frontier, only some configurations within the caps (a lower bound's source)."""
    start, dtype = time.perf_counter(), _dtype(profile, objective)
    groups, largest, history = [_start(profile, objective, dtype)], 1, [1]
    caps, later, dropped = (bound.caps if bound is not None else None), later_forward_floors(profile), -math.inf
    if bound is not None:
        root, dropped = _within(profile, groups[0], bound, 0)
        groups = [root] if len(root.objective) else []
    for index in range(profile.num_blocks):
        groups, most = _layer(profile, groups, index, objective, contiguous, bound, later)
        dropped = max(dropped, most)
        if beam is not None:
            groups = _beam(profile, groups, bound, index + 1, beam)
        history.append(sum(len(g.objective) for g in groups))
        alive, largest = history[-1], max(largest, history[-1])
        projected = _projected(history, profile.num_blocks) if bound is None else alive  # bounded rows shrink late
        if row_limit is not None and max(largest, projected) > row_limit:
            raise FrontierTooLarge(f"{alive} partial configurations after block {index} (limit {row_limit})")
    frontier = _complete(profile, groups, objective, caps, largest, time.perf_counter() - start)
    return replace(frontier, most_dropped=dropped)


def _complete(profile: ModelProfile, groups: list[_Group], objective: Objective, caps, largest: int,
              elapsed: float) -> Frontier:
    """Place the head on every partial configuration, keep the complete ones that can be an answer."""
    columns: list[list] = [[], [], [], [], [], []]
    for group in groups:
        post = place_post(profile, group.prefix.grad_flows)
        final = advance(profile, group.prefix, post)
        values = (group.objective + objective.params_weight * post.cost.trainable_params, peak_of(profile, final),
                  final.flops_forward + final.flops_backward, final.grad_bytes, final.kept_bytes, group.choice)
        for column, value in zip(columns, values):
            column.append(value)
    if not groups:
        empty = np.zeros(0, dtype=np.int64)
        return Frontier(profile.block_state_names, np.zeros((0, profile.num_blocks), dtype=np.int16), empty, empty,
                        empty, empty, largest, elapsed)
    score, peak, flops, upload, kept, choice = (np.concatenate(c) for c in columns)
    index = np.arange(len(score))
    if caps is not None:
        index = np.flatnonzero((peak <= caps[0]) & (flops <= caps[1]) & (upload <= caps[2]))
    order = index[np.lexsort((lex_rank(choice[index]), kept[index], upload[index], flops[index], peak[index],
                              -score[index]))]
    order = order[undominated(np.column_stack([peak[order], flops[order], upload[order]]))]
    return Frontier(profile.block_state_names, choice[order], score[order], peak[order], flops[order],
                    upload[order], largest, elapsed)
