"""Upper bounds on the objective the blocks not placed yet can still add, given what is left of each budget.

The per-class programme (solve/frontier.py with a Bound) drops a partial configuration when no completion
of it can reach the objective of a configuration already known to fit the class: then it is never the
answer. The bound is a relaxation, so it can only keep too much, never drop an answer.

For blocks k.. and the head, four *resources* are additive over the parts and each is capped by a budget:
  upload   the gradient bytes (the upload budget: upload = the sum of trainable_bytes)
  flops    forward + backward FLOPs (the compute budget)
  step     adapters + optimizer state + gradient bytes: the optimizer-step event of compose.peak_events is
           resident + all adapters and optimizer state + all gradients + a step temporary >= 0, and every
           backward event of an earlier part grows by the later parts' gradients, so
           peak >= R + rx_placed + max(grads_placed + step_placed, backward_live_placed) + step(later parts)
  kept     adapters + optimizer state + activation bytes: the backward event of the head holds everything
           every part keeps, so peak >= R + rx_placed + kept_placed + kept(later parts); the head's own kept
           value adds the larger of its two events above the kept bytes (its backward temporaries, or the
           hidden state and forward temporaries of its forward, which holds what every earlier part keeps)
(R = resident bytes, rx = adapters beyond the base weights and optimizer state, as in compose.Prefix; a part
keeps at least its activation_bytes; each per-state value below takes the smaller of its two boundaries).
Given what is left of a budget, the most the later parts can earn is at most the best weight of any choice
of one state per part whose resource fits: per suffix a staircase of (resource, weight) points, each part's
per-state values (least resource over its boundaries, largest weight) added to the next suffix's staircase
and the points that another beats (no more resource, at least the weight) dropped. Over STEPS points, runs
of points merge into (the run's least resource, its largest weight), which can only raise the bound.
`most` takes the smallest of the four bounds; a row whose remainder is below the least its later parts need
of some resource cannot fit at all (-inf).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from budgetplan.profile.types import FROZEN_IN_PATH, FROZEN_OUTSIDE, INPUT_GRAD, ModelProfile, PartCost
from budgetplan.solve.objective import Objective

RESOURCES = ("upload", "flops", "step", "kept")
STEPS = 4096  # the most points a staircase keeps (merging more only loosens the bound)


def _resources(cost: PartCost, base_param_bytes: int) -> tuple[int, int, int, int]:
    rx = cost.param_bytes - base_param_bytes + cost.optimizer_state_bytes
    return (cost.trainable_bytes, cost.flops_forward + cost.flops_backward, rx + cost.trainable_bytes,
            rx + cost.activation_bytes)


def _head_resources(profile: ModelProfile, cost: PartCost) -> tuple[int, int, int, int]:
    """The head's resources; its kept resource also holds the larger of its own two events above the kept bytes
    (backward: its activations and backward temporaries; forward: the hidden state entering it and its forward
    temporaries, e.g. a language model's logits), since both events hold everything the earlier parts keep."""
    upload, flops, step, kept = _resources(cost, cost.param_bytes)
    events = max(cost.activation_bytes + cost.backward_extra_bytes, profile.boundary_size(profile.num_blocks)
                 + cost.forward_extra_bytes)
    return upload, flops, step, kept - cost.activation_bytes + events


def _least_rx(profile: ModelProfile, index: int) -> int:
    """The least change of resident bytes any state of block `index` makes against its frozen full-precision form
    (compose.place_block's adapters term; negative where weights are held in int8), and at most 0."""
    block, least = profile.blocks[index], 0
    for by_boundary in block.states.values():
        for boundary, cost in by_boundary.items():
            frozen = FROZEN_IN_PATH if boundary == INPUT_GRAD else FROZEN_OUTSIDE
            if frozen in block.states:
                least = min(least, cost.param_bytes - block.states[frozen][boundary].param_bytes)
    return least


def _options(profile: ModelProfile, objective: Objective, index: int) -> list[tuple[tuple[int, ...], int]]:
    """Per state of block `index`: (the least of each resource over its boundaries, the weight it earns)."""
    block = profile.blocks[index]
    out = []
    for state, by_boundary in block.states.items():
        values, earned = None, 0
        for boundary, cost in by_boundary.items():
            frozen = FROZEN_IN_PATH if boundary == INPUT_GRAD else FROZEN_OUTSIDE
            base = block.states[frozen][boundary].param_bytes if frozen in block.states else cost.param_bytes
            found = _resources(cost, base)
            values = found if values is None else tuple(map(min, values, found))
            earned = max(earned, objective.state_weights[index].get(state, 0)
                         + objective.params_weight * cost.trainable_params)
        out.append((values, earned))
    return out


def _staircase(resource: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The points no other point beats (no more resource, at least the weight), resource ascending; kept to
    at most STEPS points by merging runs of them into (the run's least resource, its largest weight), which
    can only raise the bound."""
    order = np.lexsort((-weight, resource))
    resource, weight = resource[order], weight[order]
    best = np.maximum.accumulate(weight)
    keep = np.ones(len(weight), dtype=bool)
    keep[1:] = weight[1:] > best[:-1]
    resource, weight = resource[keep], weight[keep]
    if len(resource) > STEPS:
        starts = np.linspace(0, len(resource), STEPS, endpoint=False).astype(np.int64)
        ends = np.append(starts[1:], len(resource)) - 1
        resource, weight = resource[starts], weight[ends]
    return resource, weight


@dataclass(frozen=True)
class _Curve:
    """Blocks k.. and the head, one resource: the most weight within x is weight[i] for the last
    resource[i] <= x (none: no completion needs so little)."""

    resource: np.ndarray
    weight: np.ndarray


def _curves(per_part: list[list[tuple[tuple[int, ...], int]]], r: int) -> list[_Curve]:
    """Per suffix start k, the staircase of (resource r, weight) over every choice of one state per part."""
    out = []
    resource, weight = np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64)
    for options in reversed(per_part):
        add_r = np.array([v[r] for v, _ in options], dtype=np.int64)
        add_w = np.array([w for _, w in options], dtype=np.int64)
        resource, weight = _staircase((resource[:, None] + add_r[None, :]).ravel(),
                                      (weight[:, None] + add_w[None, :]).ravel())
        out.append(_Curve(resource, weight))
    return out[::-1]


class SuffixBound:
    """most(k, remaining): per row, at most the objective blocks k.. and the head can add (module docstring)."""

    def __init__(self, profile: ModelProfile, objective: Objective) -> None:
        post = [(_head_resources(profile, c), objective.params_weight * c.trainable_params)
                for c in profile.post.values()]
        per_part = [_options(profile, objective, i) for i in range(profile.num_blocks)] + [post]
        by_resource = [_curves(per_part, r) for r in range(len(RESOURCES))]
        self.curves: list[tuple[_Curve, ...]] = list(zip(*by_resource))
        # Weights held in int8 make a later block's resident bytes negative: every event of an earlier part then
        # ends lower, so "a prefix over the memory cap stays over it" holds only after the most later parts can
        # save (rx_floor[k], <= 0, for blocks k.. and the head).
        saves = [_least_rx(profile, i) for i in range(profile.num_blocks)]
        self.rx_floor: list[int] = [int(sum(saves[k:])) for k in range(profile.num_blocks + 1)]

    def most(self, k: int, remaining: tuple) -> np.ndarray:
        """Upper bound per row (-inf where some resource cannot be met) given each resource's remainder."""
        bound = None
        for curve, left in zip(self.curves[k], remaining):
            left = np.asarray(left).astype(np.int64)
            at = np.searchsorted(curve.resource, left, side="right") - 1
            value = np.where(at >= 0, curve.weight[np.maximum(at, 0)].astype(np.float64), -np.inf)
            bound = value if bound is None else np.minimum(bound, value)
        return bound

    def least(self, k: int) -> tuple[int, ...]:
        """The least of each resource blocks k.. and the head need together."""
        return tuple(int(c.resource[0]) for c in self.curves[k])
