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
kept for backward. `advance` computes the same events part by part (compose() folds it over the parts;
the planner, solve/frontier.py, folds it over many partial configurations at once); peak_events lists them
by name and tests/test_profile.py checks both agree.

A +recompute block keeps only its inputs, so kept(k) shrinks for every event above it; the moment its
activations are alive again is its own backward (checkpoint re-runs the forward when autograd first needs
one of them), and that is the backward event of part k: its backward_extra is measured with the block under
checkpoint, so it holds the re-run forward's activations and temporaries on top of what the event already
counts (the block's input, the later parts' gradients, the incoming hidden gradient).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from budgetplan.errors import ConfigError
from budgetplan.profile.types import (
    FROZEN,
    FROZEN_IN_PATH,
    FROZEN_OUTSIDE,
    INPUT_GRAD,
    NO_INPUT_GRAD,
    PRE_INT8,
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
            parsed = parse_state(state)
        except ValueError as exc:
            raise ConfigError(f"block {index}: {exc}") from None
        frozen = parsed.name.replace(parsed.base, FROZEN, 1)  # 'frozen' or 'frozen+int8': the input-only form
        if parsed.base == FROZEN:
            state = replace(parsed, base=FROZEN_IN_PATH if grad_flows else FROZEN_OUTSIDE).name
        elif parsed.base == FROZEN_OUTSIDE and grad_flows:
            raise ConfigError(f"block {index} cannot be {state}: a block below it is trained; use '{frozen}'")
        elif parsed.base == FROZEN_IN_PATH and not grad_flows:
            raise ConfigError(f"block {index} cannot be {state}: nothing below it is trained; use '{frozen}'")
        resolved.append(state)
        grad_flows = grad_flows or is_trainable(state)
    return tuple(resolved)


def place_block(profile: ModelProfile, index: int, state: str, grad_flows: bool) -> PlacedPart:
    """Block `index` in `state` (already resolved), with an input gradient when `grad_flows`."""
    block = profile.blocks[index]
    if state not in block.states:
        known = ", ".join(block.states)
        raise ConfigError(f"block {block.index}: state '{state}' was not profiled; profiled states: {known}")
    boundary = INPUT_GRAD if grad_flows else NO_INPUT_GRAD
    frozen_key = FROZEN_IN_PATH if grad_flows else FROZEN_OUTSIDE
    base = block.states[frozen_key][boundary].param_bytes
    return PlacedPart(f"block {block.index}", state, boundary, block.states[state][boundary], base)


def place_pre(profile: ModelProfile) -> PlacedPart:
    frozen = PRE_INT8 if profile.context.int8_embeddings else FROZEN_OUTSIDE
    pre_state = TRAINED if profile.context.train_embeddings else frozen
    pre_frozen = profile.pre[FROZEN_OUTSIDE][NO_INPUT_GRAD]
    return PlacedPart("pre", pre_state, NO_INPUT_GRAD, profile.pre[pre_state][NO_INPUT_GRAD], pre_frozen.param_bytes)


def place_post(profile: ModelProfile, grad_flows: bool) -> PlacedPart:
    post = profile.post[INPUT_GRAD if grad_flows else NO_INPUT_GRAD]
    return PlacedPart("post", TRAINED, INPUT_GRAD if grad_flows else NO_INPUT_GRAD, post, post.param_bytes)


def place_parts(profile: ModelProfile, block_states: tuple[str, ...]) -> list[PlacedPart]:
    """The parts of a configuration in forward order, each with its state, boundary and cost."""
    if len(block_states) != profile.num_blocks:
        raise ConfigError(
            f"configuration has {len(block_states)} block states but the model has {profile.num_blocks} blocks"
        )
    train_embeddings = profile.context.train_embeddings
    states = resolve_states(block_states, train_embeddings)
    parts = [place_pre(profile)]
    grad_flows = train_embeddings
    for index, state in enumerate(states):
        parts.append(place_block(profile, index, state, grad_flows))
        grad_flows = grad_flows or is_trainable(state)
    return parts + [place_post(profile, grad_flows)]


def kept_bytes_per_part(parts: list[PlacedPart], boundary_bytes) -> list[int]:
    """Saved-for-backward bytes each part adds, with boundary and shared tensors counted once.

    `boundary_bytes`: an int for every boundary, or a function of j giving the bytes entering part j + 1."""
    size = boundary_bytes if callable(boundary_bytes) else (lambda j: boundary_bytes)
    kept = []
    shared_seen: dict[str, int] = {}
    for k, part in enumerate(parts):
        own = part.cost.activation_bytes
        if k > 0:
            producer = parts[k - 1].cost
            if producer.saves_output or part.cost.saves_input:
                own += size(k - 1)
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
    previous = parts[k - 1].cost.output_extra_bytes if held_previous(profile, block) else 0
    return sum(profile.boundary_size(b) for b in hidden) + shared + profile.held_other_bytes[block] + previous


def held_previous(profile: ModelProfile, block: int) -> bool:
    """Whether the model holds the previous block's extra outputs when block `block` (or the head) starts."""
    return block < len(profile.held_previous_outputs) and profile.held_previous_outputs[block]


def has_backward(part: PlacedPart) -> bool:
    return part.boundary == INPUT_GRAD or is_trainable(part.state) or part.label == "post"


def peak_events(profile: ModelProfile, parts: list[PlacedPart]) -> dict[str, int]:
    """Live bytes at each event of one training step; the predicted peak is the largest."""
    kept = kept_bytes_per_part(parts, profile.boundary_size)
    grads = [p.cost.trainable_bytes for p in parts]
    adapters = sum(p.cost.param_bytes - p.base_param_bytes for p in parts)
    resident = profile.resident_bytes + adapters + sum(p.cost.optimizer_state_bytes for p in parts)
    hidden = profile.boundary_size  # of the tensor entering part j + 1
    events: dict[str, int] = {}
    for k, part in enumerate(parts):
        live_input = hidden(k - 1) if k > 0 else 0
        events[f"forward {part.label}"] = (
            resident + sum(kept[:k]) + live_input + held_bytes(profile, parts, k) + part.cost.forward_extra_bytes
        )
    for k, part in enumerate(parts):
        if not has_backward(part):
            continue
        grad_in = hidden(k) if part.label != "post" else 0
        events[f"backward {part.label}"] = (
            resident + sum(kept[: k + 1]) + sum(grads[k + 1:]) + grad_in + part.cost.backward_extra_bytes
        )
    events["optimizer step"] = resident + sum(grads) + max(p.cost.step_extra_bytes for p in parts)
    return events


def maximum(a, b):
    """max(a, b) for ints, elementwise for numpy arrays: solve/frontier.py runs the scan below on arrays that
    hold many partial configurations at once (the same arithmetic, so its costs are compose's costs)."""
    if isinstance(a, int) and isinstance(b, int):
        return a if a >= b else b
    import numpy

    return numpy.maximum(a, b)


@dataclass(frozen=True)
class Prefix:
    """What the parts placed so far fix about a configuration's cost, in the form the later parts need.

    compose() folds `advance` over the parts; the planner (solve/frontier.py) folds it over many partial
    configurations at once. The amounts are ints (or numpy arrays of them); the other fields are plain.
    Live bytes leave out two terms every event of the step contains the same way: the resident bytes
    (weights, buffers, batch, adapters, optimizer state) and, for a backward event, the gradients of the
    parts not placed yet. `peak_of` adds them back, so the peak equals max(peak_events(...).values()).
    """

    parts: int = 0  # parts placed (pre is part 0, block i is part i + 1)
    grad_flows: bool = False  # some placed part is trainable: the next block has an input gradient
    saves_output: bool = False  # the last placed part keeps its output for backward
    output_extra_bytes: int = 0  # the last placed part's extra outputs it does not keep (PartCost field)
    # Per hidden state entering block b (b < blocks placed): kept for backward by its producer or consumer.
    kept_boundaries: tuple[bool, ...] = ()
    shared: dict = field(default_factory=dict)  # shared input name -> the largest size a placed part keeps
    kept_bytes: object = 0  # sum of kept_bytes_per_part over the placed parts (the activation bytes)
    resident_extra_bytes: object = 0  # adapters beyond the base weights, and optimizer state
    grad_bytes: object = 0  # gradients of trained tensors (= upload bytes)
    flops_forward: object = 0
    flops_backward: object = 0
    trainable_params: object = 0
    optimizer_state_bytes: object = 0
    forward_live: object = 0  # largest forward event so far, less the resident bytes
    backward_live: object = 0  # largest backward event so far, less resident and not-yet-placed gradients
    step_extra_bytes: object = 0  # largest optimizer-step temporary so far


def held_at(profile: ModelProfile, prefix: Prefix) -> object:
    """held_bytes for the part placed next, from what the prefix keeps (compose.held_bytes, incrementally)."""
    block = prefix.parts - 1
    if not 0 <= block < len(profile.held_hidden):
        return 0
    dropped = [b for b in profile.held_hidden[block] if b != block and not prefix.kept_boundaries[b]]
    total = sum(profile.boundary_size(b) for b in dropped) + profile.held_other_bytes[block]
    if held_previous(profile, block):
        total = total + prefix.output_extra_bytes
    for name, nbytes in profile.held_shared_bytes[block].items():
        total = total + maximum(0, nbytes - prefix.shared.get(name, 0))
    return total


def advance(profile: ModelProfile, prefix: Prefix, part: PlacedPart) -> Prefix:
    """The prefix with `part` placed next: its kept bytes, its forward and backward events, its sums."""
    k, c = prefix.parts, part.cost
    hidden_in = profile.boundary_size(k - 1) if k > 0 else 0  # the hidden state entering this part
    hidden_out = profile.boundary_size(k)  # its output's (its gradient arrives in backward)
    boundary = k > 0 and (prefix.saves_output or c.saves_input)
    own = c.activation_bytes + (hidden_in if boundary else 0)
    shared = dict(prefix.shared)
    for name, nbytes in c.shared_saved_bytes.items():
        before = shared.get(name, 0)
        shared[name] = maximum(before, nbytes)
        own = own + (shared[name] - before)
    kept = prefix.kept_bytes + own
    forward = prefix.kept_bytes + hidden_in + held_at(profile, prefix) + c.forward_extra_bytes
    backward = prefix.backward_live + c.trainable_bytes
    if has_backward(part):
        backward = maximum(backward, kept + (hidden_out if part.label != "post" else 0) + c.backward_extra_bytes)
    return Prefix(
        parts=k + 1, grad_flows=prefix.grad_flows or is_trainable(part.state), saves_output=c.saves_output,
        output_extra_bytes=c.output_extra_bytes,
        kept_boundaries=prefix.kept_boundaries + ((boundary,) if k > 0 else ()), shared=shared, kept_bytes=kept,
        resident_extra_bytes=prefix.resident_extra_bytes + (c.param_bytes - part.base_param_bytes)
        + c.optimizer_state_bytes,
        grad_bytes=prefix.grad_bytes + c.trainable_bytes,
        flops_forward=prefix.flops_forward + c.flops_forward, flops_backward=prefix.flops_backward + c.flops_backward,
        trainable_params=prefix.trainable_params + c.trainable_params,
        optimizer_state_bytes=prefix.optimizer_state_bytes + c.optimizer_state_bytes,
        forward_live=maximum(prefix.forward_live, forward), backward_live=backward,
        step_extra_bytes=maximum(prefix.step_extra_bytes, c.step_extra_bytes),
    )


def peak_of(profile: ModelProfile, prefix: Prefix) -> object:
    """The predicted peak of a complete configuration: its largest event, resident bytes added back."""
    live = maximum(maximum(prefix.forward_live, prefix.backward_live), prefix.grad_bytes + prefix.step_extra_bytes)
    return profile.resident_bytes + prefix.resident_extra_bytes + live


def scan(profile: ModelProfile, parts: list[PlacedPart]) -> Prefix:
    prefix = Prefix()
    for part in parts:
        prefix = advance(profile, prefix, part)
    return prefix


def compose(profile: ModelProfile, block_states: tuple[str, ...] | list[str]) -> ConfigCost:
    """Derived cost of one configuration, exact for FLOPs and saved bytes, modelled for the peak."""
    parts = place_parts(profile, tuple(block_states))
    total = scan(profile, parts)
    return ConfigCost(
        block_states=tuple(p.state for p in parts[1:-1]),
        flops_forward=total.flops_forward,
        flops_backward=total.flops_backward,
        activation_bytes=total.kept_bytes,
        peak_bytes_predicted=peak_of(profile, total),
        peak_bytes_measured=None,
        trainable_params=total.trainable_params,
        upload_bytes=total.grad_bytes,
        optimizer_state_bytes=total.optimizer_state_bytes,
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
