"""Compose the cost of a whole configuration from the measured parts.

FLOPs, activation bytes, gradient, optimizer and upload bytes are sums over parts: autograd's work for a part
depends only on the part's own state and on whether gradient must leave its input (its boundary), so the
sum is exact. Two kinds of saved tensor are shared between parts and counted once: the hidden state passed
across a boundary (kept by the producer, the consumer, or both) and inputs given to every block alike
(attention masks, rotary tables).

The peak is the largest of a few *events* of one training step, each a sum of per-part terms:
  forward of part k   resident + kept(parts < k) + one hidden state + held(k) + forward_extra(k)
  backward of part k  resident + kept(parts <= k) + grads(parts > k) + one hidden gradient + backward_extra(k)
  optimizer step      resident + all grads + max step_extra
where resident = weights, buffers, the batch and the optimizer state (steady state: state exists before
the step), and held(k) = what the model's own forward code keeps live at block k's start (BERT keeps its
embedding output, GPT-2 its token and position embeddings, every model its masks), minus what is already
kept for backward. The solver states the same events as linear constraints.

A +recompute block keeps only its inputs, so kept(k) shrinks for every event above it; the moment its
activations are alive again is its own backward (checkpoint re-runs the forward when autograd first needs
one of them), and that is the backward event of part k: its backward_extra is measured with the block under
checkpoint, so it holds the re-run forward's activations and temporaries on top of what the event already
counts (the block's input, the later parts' gradients, the incoming hidden gradient).
"""

from __future__ import annotations

from dataclasses import dataclass

from budgetplan.errors import ConfigError
from budgetplan.profile.types import (
    FROZEN,
    FROZEN_IN_PATH,
    FROZEN_OUTSIDE,
    INPUT_GRAD,
    NO_INPUT_GRAD,
    TRAINED,
    ConfigCost,
    ModelProfile,
    PartCost,
    is_trainable,
    parse_state,
)



@dataclass(frozen=True)
class PlacedPart:
    """One part of a configuration with the cost that applies to it."""

    label: str  # "pre", "block 3", "post"
    state: str
    boundary: str
    cost: PartCost
    base_param_bytes: int  # parameter bytes of the part without LoRA adapters


def resolve_states(states: tuple[str, ...] | list[str], train_embeddings: bool) -> tuple[str, ...]:
    """Turn "frozen" into frozen_outside / frozen_in_path and check explicit frozen states are possible."""
    grad_flows = train_embeddings
    resolved = []
    for index, state in enumerate(states):
        try:
            parse_state(state)
        except ValueError as exc:
            raise ConfigError(f"block {index}: {exc}") from None
        if state == FROZEN:
            state = FROZEN_IN_PATH if grad_flows else FROZEN_OUTSIDE
        elif state == FROZEN_OUTSIDE and grad_flows:
            raise ConfigError(f"block {index} cannot be frozen_outside: a block below it is trained; use 'frozen'")
        elif state == FROZEN_IN_PATH and not grad_flows:
            raise ConfigError(f"block {index} cannot be frozen_in_path: nothing below it is trained; use 'frozen'")
        resolved.append(state)
        grad_flows = grad_flows or is_trainable(state)
    return tuple(resolved)


def place_parts(profile: ModelProfile, block_states: tuple[str, ...]) -> list[PlacedPart]:
    """The parts of a configuration in forward order, each with its state, boundary and cost."""
    if len(block_states) != profile.num_blocks:
        raise ConfigError(
            f"configuration has {len(block_states)} block states but the model has {profile.num_blocks} blocks"
        )
    train_embeddings = profile.context.train_embeddings
    states = resolve_states(block_states, train_embeddings)
    pre_state = TRAINED if train_embeddings else FROZEN_OUTSIDE
    pre_frozen = profile.pre[FROZEN_OUTSIDE][NO_INPUT_GRAD]
    parts = [PlacedPart("pre", pre_state, NO_INPUT_GRAD, profile.pre[pre_state][NO_INPUT_GRAD], pre_frozen.param_bytes)]
    grad_flows = train_embeddings
    for block, state in zip(profile.blocks, states):
        if state not in block.states:
            known = ", ".join(block.states)
            raise ConfigError(f"block {block.index}: state '{state}' was not profiled; profiled states: {known}")
        boundary = INPUT_GRAD if grad_flows else NO_INPUT_GRAD
        frozen_key = FROZEN_IN_PATH if grad_flows else FROZEN_OUTSIDE
        base = block.states[frozen_key][boundary].param_bytes
        parts.append(PlacedPart(f"block {block.index}", state, boundary, block.states[state][boundary], base))
        grad_flows = grad_flows or is_trainable(state)
    post_boundary = INPUT_GRAD if grad_flows else NO_INPUT_GRAD
    post = profile.post[post_boundary]
    parts.append(PlacedPart("post", TRAINED, post_boundary, post, post.param_bytes))
    return parts


def kept_bytes_per_part(parts: list[PlacedPart], boundary_bytes: int) -> list[int]:
    """Saved-for-backward bytes each part adds, with boundary and shared tensors counted once."""
    kept = []
    shared_seen: dict[str, int] = {}
    for k, part in enumerate(parts):
        own = part.cost.activation_bytes
        if k > 0:
            producer = parts[k - 1].cost
            if producer.saves_output or part.cost.saves_input:
                own += boundary_bytes
        for name, nbytes in part.cost.shared_saved_bytes.items():
            if nbytes > shared_seen.get(name, 0):
                own += nbytes - shared_seen.get(name, 0)
                shared_seen[name] = nbytes
        kept.append(own)
    return kept


def boundary_kept(parts: list[PlacedPart], boundary: int) -> bool:
    """Whether the hidden state entering block `boundary` (parts[boundary + 1]) is saved for backward."""
    return parts[boundary].cost.saves_output or parts[boundary + 1].cost.saves_input


def shared_kept_before(parts: list[PlacedPart], k: int) -> dict[str, int]:
    """Shared inputs (by name) already kept for backward by the parts before part k."""
    seen: dict[str, int] = {}
    for part in parts[:k]:
        for name, nbytes in part.cost.shared_saved_bytes.items():
            seen[name] = max(seen.get(name, 0), nbytes)
    return seen


def held_bytes(profile: ModelProfile, parts: list[PlacedPart], k: int) -> int:
    """Bytes the model's code holds at the start of part k that no earlier part keeps for backward."""
    block = k - 1
    if not 0 <= block < len(profile.held_hidden):
        return 0
    hidden = [b for b in profile.held_hidden[block] if b != block and not boundary_kept(parts, b)]
    kept_shared = shared_kept_before(parts, k)
    shared = sum(max(0, n - kept_shared.get(name, 0)) for name, n in profile.held_shared_bytes[block].items())
    return len(hidden) * profile.boundary_bytes + shared + profile.held_other_bytes[block]


def has_backward(part: PlacedPart) -> bool:
    return part.boundary == INPUT_GRAD or is_trainable(part.state) or part.label == "post"


def peak_events(profile: ModelProfile, parts: list[PlacedPart]) -> dict[str, int]:
    """Live bytes at each event of one training step; the predicted peak is the largest."""
    kept = kept_bytes_per_part(parts, profile.boundary_bytes)
    grads = [p.cost.trainable_bytes for p in parts]
    adapters = sum(p.cost.param_bytes - p.base_param_bytes for p in parts)
    resident = profile.resident_bytes + adapters + sum(p.cost.optimizer_state_bytes for p in parts)
    hidden = profile.boundary_bytes
    events: dict[str, int] = {}
    for k, part in enumerate(parts):
        live_input = hidden if k > 0 else 0
        events[f"forward {part.label}"] = (
            resident + sum(kept[:k]) + live_input + held_bytes(profile, parts, k) + part.cost.forward_extra_bytes
        )
    for k, part in enumerate(parts):
        if not has_backward(part):
            continue
        grad_in = hidden if part.label != "post" else 0
        events[f"backward {part.label}"] = (
            resident + sum(kept[: k + 1]) + sum(grads[k + 1:]) + grad_in + part.cost.backward_extra_bytes
        )
    events["optimizer step"] = resident + sum(grads) + max(p.cost.step_extra_bytes for p in parts)
    return events


def compose(profile: ModelProfile, block_states: tuple[str, ...] | list[str]) -> ConfigCost:
    """Derived cost of one configuration, exact for FLOPs and saved bytes, modelled for the peak."""
    parts = place_parts(profile, tuple(block_states))
    kept = kept_bytes_per_part(parts, profile.boundary_bytes)
    return ConfigCost(
        block_states=tuple(p.state for p in parts[1:-1]),
        flops_forward=sum(p.cost.flops_forward for p in parts),
        flops_backward=sum(p.cost.flops_backward for p in parts),
        activation_bytes=sum(kept),
        peak_bytes_predicted=max(peak_events(profile, parts).values()),
        peak_bytes_measured=None,
        trainable_params=sum(p.cost.trainable_params for p in parts),
        upload_bytes=sum(p.cost.trainable_bytes for p in parts),
        optimizer_state_bytes=sum(p.cost.optimizer_state_bytes for p in parts),
    )


def standard_configs(profile: ModelProfile) -> list[tuple[str, ...]]:
    """Last-k for k = 0..L (k = 0 is head only, k = L is full), then every other trainable state on all blocks
    (LoRA at each rank, and the +recompute variants where profiled)."""
    n = profile.num_blocks
    configs = [tuple([FROZEN] * (n - k) + [TRAINED] * k) for k in range(n + 1)]
    for state in profile.block_state_names:
        if is_trainable(state) and state != TRAINED:
            configs.append(tuple([state] * n))
    return configs
