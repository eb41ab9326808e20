"""Plain data passed from the profiler to the solver, the plan and the executor.

Vocabulary
- A *part* is the embeddings-and-everything-before-the-blocks ("pre"), one block, or everything after the
  last block including the head and the loss ("post").
- A block's *state* is one of FROZEN_OUTSIDE, FROZEN_IN_PATH, TRAINED or "lora-R" (peft LoRA of rank R on
  the block's attention and MLP linears, base weights frozen), and a trainable state may carry the suffix
  "+recompute" (activation recomputation: the block runs under torch.utils.checkpoint, keeps only its inputs
  for backward and runs its forward again during backward). `parse_state` is the one reader of state names.
- A part's *boundary* says whether the gradient must flow out of its input: INPUT_GRAD when some part below
  it is trainable, NO_INPUT_GRAD otherwise. Frozen states fix it (frozen_outside never has an input
  gradient, frozen_in_path always has); trained and LoRA parts are measured both ways, because the lowest
  trained part computes no input gradient and keeps fewer tensors.
"""

from __future__ import annotations

import functools

from dataclasses import dataclass, field, replace

# 1.1 (i10): context.head_source, measurement.block_runs / distinct_blocks. 1.1 (i15, a parallel branch): block
# states may carry "+recompute". 1.2: both. 1.3 (i25): frozen and LoRA states may carry "+int8". Every earlier
# profile reads unchanged.
SCHEMA_VERSION = "1.3"

FROZEN_OUTSIDE = "frozen_outside"
FROZEN_IN_PATH = "frozen_in_path"
TRAINED = "trained"
LORA_PREFIX = "lora-"
FROZEN = "frozen"  # accepted as input; resolved to frozen_outside or frozen_in_path by position

INPUT_GRAD = "input_grad"
NO_INPUT_GRAD = "no_input_grad"

OPTIMIZERS = ("sgd", "sgd-momentum", "adam", "adamw")  # the local optimizers (profile/measure.py builds them)

MEASURED = "measured"
DERIVED = "derived"


RECOMPUTE_SUFFIX = "+recompute"
INT8 = "int8"
QUANT_SUFFIX = "+" + INT8  # the only storage format so far; a 4-bit one would be one more name here
PRE_INT8 = FROZEN_OUTSIDE + QUANT_SUFFIX  # frozen embeddings held in int8 (ProfileContext.int8_embeddings)
STATE_FORMS = ("frozen, frozen_outside, frozen_in_path, trained or lora-R (R >= 1); the frozen and LoRA ones "
               "optionally with +int8, the trainable ones optionally with +recompute (e.g. trained+recompute, "
               "frozen_outside+int8, lora-8+int8+recompute)")


@dataclass(frozen=True)
class BlockState:
    """A parsed state name: the base state and whether the block recomputes its activations."""

    base: str  # frozen_outside, frozen_in_path, trained or lora-R
    recompute: bool = False
    lora_rank: int | None = None
    quant: str | None = None  # "int8": the block's frozen linear weights are held quantised

    @property
    def name(self) -> str:
        return self.base + (f"+{self.quant}" if self.quant else "") + (RECOMPUTE_SUFFIX if self.recompute else "")

    @property
    def trainable(self) -> bool:
        return self.base == TRAINED or self.lora_rank is not None


def parse_state(state: str) -> BlockState:
    """Read a block state name; ValueError naming the accepted forms when it is none of them."""
    if not isinstance(state, str):
        raise ValueError(f"block state {state!r} is not a string; use {STATE_FORMS}")
    return _parse_name(state)


@functools.lru_cache(maxsize=1024)
def _parse_name(state: str) -> BlockState:
    """parse_state of a string, cached: the planner and compose() ask for the same few names millions of times
    (a ValueError is raised again each time, lru_cache does not keep it)."""
    unquantised = state[: -len(RECOMPUTE_SUFFIX)] if state.endswith(RECOMPUTE_SUFFIX) else state
    base = unquantised[: -len(QUANT_SUFFIX)] if unquantised.endswith(QUANT_SUFFIX) else unquantised
    rank = None
    if base.startswith(LORA_PREFIX):
        digits = base[len(LORA_PREFIX):]
        rank = int(digits) if digits.isascii() and digits.isdigit() and int(digits) >= 1 else None
        if rank is None or digits != str(rank):
            raise ValueError(f"block state '{state}': '{base}' is not lora-R with a rank R >= 1; use {STATE_FORMS}")
    elif base not in (FROZEN_OUTSIDE, FROZEN_IN_PATH, TRAINED, FROZEN):
        raise ValueError(f"unknown block state '{state}'; use {STATE_FORMS}")
    parsed = BlockState(base, unquantised != state, rank, INT8 if base != unquantised else None)
    if parsed.quant and base == TRAINED:
        raise ValueError(f"block state '{state}': a trained block's weights are trained in full precision; only "
                         f"frozen and LoRA states take {QUANT_SUFFIX} (e.g. frozen{QUANT_SUFFIX}, lora-8{QUANT_SUFFIX})")
    if parsed.recompute and not parsed.trainable:
        raise ValueError(f"block state '{state}': only trainable states (trained, lora-R) can recompute; "
                         f"use trained+recompute or lora-R+recompute, or drop +recompute")
    return parsed


def lora_state(rank: int) -> str:
    return f"{LORA_PREFIX}{rank}"


def recompute_state(state: str) -> str:
    """The recomputing variant of a trainable state (trained -> trained+recompute, lora-8+int8 ->
    lora-8+int8+recompute)."""
    return parse_state(replace(parse_state(state), recompute=True).name).name


def quantized_state(state: str) -> str:
    """The int8 variant of a frozen or LoRA state (frozen_outside -> frozen_outside+int8, lora-8+recompute ->
    lora-8+int8+recompute); ValueError for trained."""
    return parse_state(replace(parse_state(state), quant=INT8).name).name


def base_state(state: str) -> str:
    """The state without recomputation (lora-8+recompute -> lora-8, lora-8+int8+recompute -> lora-8+int8)."""
    return replace(parse_state(state), recompute=False).name


def is_recompute(state: str) -> bool:
    return parse_state(state).recompute


def is_quantized(state: str) -> bool:
    return parse_state(state).quant is not None


def can_quantize(state: str) -> bool:
    """Whether a state has an int8 variant (frozen and LoRA states do; trained ones train every weight)."""
    return parse_state(state).base != TRAINED


def lora_rank(state: str) -> int | None:
    """The LoRA rank of a state name (recomputing or not), or None when the state is not a valid LoRA state."""
    try:
        return parse_state(state).lora_rank
    except ValueError:
        return None


STATE_NAMES_HINT = (f"{FROZEN_OUTSIDE}, {FROZEN_IN_PATH}, {TRAINED} or {LORA_PREFIX}R with a rank R >= 1, the "
                    f"frozen and LoRA ones optionally with {QUANT_SUFFIX}, the trainable ones optionally with "
                    f"{RECOMPUTE_SUFFIX}")


def state_problem(state) -> str | None:
    """Why `state` is not a block state budgetplan knows, or None. The one place validation asks: it reads the
    name with parse_state, so trained+recompute, lora-R+recompute and frozen_outside+int8 are accepted ('frozen'
    and 'frozen+int8' are input-only and are not stored states)."""
    if not isinstance(state, str):
        return f"{state!r} is not a state name"
    try:
        parsed = parse_state(state)
    except ValueError as exc:
        base = state[: -len(RECOMPUTE_SUFFIX)] if state.endswith(RECOMPUTE_SUFFIX) else state
        if base.endswith(QUANT_SUFFIX) and base[: -len(QUANT_SUFFIX)] == TRAINED:
            return f"'{state}': a trained block cannot hold its weights in {INT8}"
        base = base[: -len(QUANT_SUFFIX)] if base.endswith(QUANT_SUFFIX) else base
        if base.startswith(LORA_PREFIX):
            return f"'{state}' has no valid LoRA rank (a whole number >= 1 without leading zeros)"
        if base in (FROZEN_OUTSIDE, FROZEN_IN_PATH, FROZEN):
            return f"'{state}': only trainable states (trained, lora-R) can recompute"
        return f"unknown state '{state}'"
    if parsed.base == FROZEN:
        return f"unknown state '{state}'"
    return None


def is_input_form(state) -> bool:
    """Whether `state` is 'frozen' or 'frozen+int8': accepted as input, resolved by position (compose.resolve_states)."""
    try:
        return isinstance(state, str) and parse_state(state).base == FROZEN
    except ValueError:
        return False


def is_trainable(state: str) -> bool:
    return parse_state(state).trainable


def boundaries_of(state: str) -> tuple[str, ...]:
    """The gradient boundaries under which a block in `state` can occur."""
    base = parse_state(state).base
    if base == FROZEN:
        raise ValueError("'frozen' has no boundary of its own; resolve it with profile.compose.resolve_states")
    if base == FROZEN_OUTSIDE:
        return (NO_INPUT_GRAD,)
    if base == FROZEN_IN_PATH:
        return (INPUT_GRAD,)
    return (INPUT_GRAD, NO_INPUT_GRAD)


@dataclass(frozen=True)
class PartCost:
    """Measured cost of one part in one state under one boundary, for one batch of the profiling context.

    FLOPs = 2 x MACs for matmul-class ops, plus the stated per-element formulas in profile/flops.py.
    Byte counts are whole storages (a view of a large tensor costs its whole storage).
    """

    flops_forward: int
    flops_backward: int
    # Tensors autograd keeps for backward, unique storages, parameters and boundary tensors excluded.
    activation_bytes: int
    # Whether the part keeps its input / output hidden state for backward (counted once per boundary).
    saves_input: bool
    saves_output: bool
    # Saved tensors that are inputs shared by every block (attention masks, rotary tables): name -> bytes.
    shared_saved_bytes: dict[str, int]
    # Live bytes above the part's starting point, at its highest, beyond what it keeps, while it runs.
    forward_extra_bytes: int
    backward_extra_bytes: int
    # Peak temporary bytes of the optimizer step over this part's parameters (CPU steps one tensor at a time).
    step_extra_bytes: int
    param_bytes: int
    trainable_params: int
    # Gradient bytes = upload bytes of the part (trained tensors in their dtype).
    trainable_bytes: int
    optimizer_state_bytes: int
    uncounted_ops: dict[str, int] = field(default_factory=dict)
    source: str = MEASURED
    # Outputs besides the hidden state that the part does not keep for backward (e.g. attention probabilities
    # a block returns): live while the model's code holds them (ModelProfile.held_previous_outputs).
    output_extra_bytes: int = 0


@dataclass(frozen=True)
class BlockProfile:
    index: int
    name: str  # dotted module path, e.g. "encoder.layer.3"
    # state -> boundary -> cost
    states: dict[str, dict[str, PartCost]]
    # Exact names of the parameters trained in each trainable state (task-model names).
    trainable_names: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    fingerprint: str  # sha256 over (name, shape, dtype) of every parameter of the task model, without LoRA
    num_blocks: int
    block_path: str  # dotted path of the block ModuleList
    family: str  # e.g. "bert", "vit", "gpt2", "custom"
    num_params: int
    library_versions: dict[str, str]
    source: str | None = None  # the model's file or folder, absolute, when loaded from a path (a plan's default spec)


@dataclass(frozen=True)
class ProfileContext:
    batch_size: int
    seq_len: int | None  # text models
    image_size: int | None  # vision models
    dtype: str  # of weights, gradients and optimizer state alike (no fp32 master copy, no autocast)
    optimizer: str  # "sgd", "sgd-momentum", "adam", "adamw"
    num_labels: int
    task: str  # "classification" or "lm"
    train_embeddings: bool
    lora_ranks: tuple[int, ...]
    lora_alpha_per_rank: float  # alpha = this x rank
    lora_targets: tuple[str, ...]  # module names inside a block that LoRA adapts
    device: str  # "cpu" or "cuda"
    # "model": the model's own task head (kept with its weights); "budgetplan": a head added to a bare base.
    # Profiles of schema 1.0 predate own heads: always "budgetplan".
    head_source: str = "budgetplan"
    # Whether every configuration composed from this profile holds the frozen embeddings in int8 (the pre state
    # frozen_outside+int8, measured when the profile has +int8 states). False in every profile file; the solve
    # sets it on the copy it plans with when that trains more (api.embedding_offers), and the plan records it.
    int8_embeddings: bool = False


@dataclass(frozen=True)
class ConfigCost:
    """Cost of one whole configuration (a state per block) for one training step on one batch."""

    block_states: tuple[str, ...]
    flops_forward: int
    flops_backward: int
    activation_bytes: int
    peak_bytes_predicted: int
    peak_bytes_measured: int | None
    trainable_params: int
    upload_bytes: int
    optimizer_state_bytes: int
    # Sources: everything composed from parts is derived; a peak measured by running the step is measured.
    flops_source: str = DERIVED
    peak_predicted_source: str = DERIVED
    peak_measured_source: str = MEASURED


@dataclass(frozen=True)
class Importance:
    """Measured worth of each block per trainable state (budgetplan.importance; JSON key "importance").

    blocks[i] maps a state name to a finite value >= 0; a state missing from the dict is worth 0.0 (frozen
    states always are), except a +recompute state, which gets its base state's value (the same weights train).
    """

    method: str
    data: str
    steps: int
    seconds: float
    blocks: tuple[dict[str, float], ...]
    source: str = MEASURED


@dataclass(frozen=True)
class ModelProfile:
    schema_version: str
    generator: str
    model: ModelInfo
    context: ProfileContext
    # "pre" part: state ("frozen_outside", "trained", and "frozen_outside+int8" where the profile has +int8 states
    # and embedding tables to hold in int8) -> boundary -> cost (pre never has an input gradient)
    pre: dict[str, dict[str, PartCost]]
    # "post" part (head and loss, always trained): boundary -> cost
    post: dict[str, PartCost]
    blocks: tuple[BlockProfile, ...]
    # Bytes live for the whole step whatever the configuration: every parameter and buffer, and the batch.
    # Optimizer state and gradients are added per part.
    resident_bytes: int
    # Bytes of one hidden-state tensor passed between blocks (and of its gradient).
    boundary_bytes: int
    pre_trainable_names: tuple[str, ...]
    post_trainable_names: tuple[str, ...]
    # Per block: indices of earlier block inputs (0 = the embeddings' output) that the model's own forward
    # code still holds when the block starts; live in the forward whatever the configuration.
    held_hidden: tuple[tuple[int, ...], ...] = ()
    # Per block: shared inputs (masks, rotary tables) live at its start, name -> bytes, and any other bytes
    # the forward code holds then (e.g. GPT-2's token and position embeddings).
    held_shared_bytes: tuple[dict[str, int], ...] = ()
    held_other_bytes: tuple[int, ...] = ()
    # Per block (and one more entry: the post part's start, when measured): whether the model's code still
    # holds the previous block's extra outputs then (GPT-Neo and Falcon keep its attention probabilities until
    # the next block returns); they cost that block's output_extra_bytes in its state.
    held_previous_outputs: tuple[bool, ...] = ()
    # Bytes of each hidden state passed between parts when they differ (Swin's stages shrink it): entry j is
    # the tensor entering block j, the last one the tensor entering the head. Empty: boundary_bytes for all.
    boundary_sizes: tuple[int, ...] = ()
    configs: tuple[ConfigCost, ...] = ()
    measurement: dict[str, float] = field(default_factory=dict)  # e.g. direct runs used, wall seconds
    importance: Importance | None = None  # measured block importance, when `budgetplan importance` ran

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    def boundary_size(self, j: int) -> int:
        """Bytes of the hidden state entering block j (j = num_blocks: the head's input)."""
        return self.boundary_sizes[j] if j < len(self.boundary_sizes) else self.boundary_bytes

    @property
    def block_state_names(self) -> tuple[str, ...]:
        return tuple(self.blocks[0].states) if self.blocks else ()


def without_states(profile: ModelProfile, drop) -> ModelProfile:
    """The profile with every block state for which `drop(state)` is true removed, and the configurations
    that use one."""
    blocks = tuple(replace(b, states={s: c for s, c in b.states.items() if not drop(s)},
                           trainable_names={s: n for s, n in b.trainable_names.items() if not drop(s)})
                   for b in profile.blocks)
    configs = tuple(c for c in profile.configs if not any(drop(s) for s in c.block_states))
    pre = {s: c for s, c in profile.pre.items() if not drop(s)}
    context = replace(profile.context, int8_embeddings=profile.context.int8_embeddings and PRE_INT8 in pre)
    return replace(profile, blocks=blocks, configs=configs, pre=pre, context=context)


def with_int8_embeddings(profile: ModelProfile) -> ModelProfile | None:
    """The profile whose configurations hold the frozen embeddings in int8, or None when it has no such pre
    state (no +int8 states, no embedding table to hold, or embeddings trained)."""
    if PRE_INT8 not in profile.pre or profile.context.train_embeddings:
        return None
    return replace(profile, context=replace(profile.context, int8_embeddings=True))


# The optional kinds of state a solve can leave out: SolverSettings field (and CLI --no-FIELD) -> which states.
OPTIONAL_STATES = {"recompute": is_recompute, "quantized": is_quantized}


def offered(profile: ModelProfile, **offer: bool) -> ModelProfile:
    """The profile without the optional kinds of state turned off (offered(p, quantized=False) drops +int8)."""
    unknown = sorted(set(offer) - set(OPTIONAL_STATES))
    if unknown:
        raise ValueError(f"unknown kind of state {unknown[0]!r}; use {', '.join(OPTIONAL_STATES)}")
    drop = [OPTIONAL_STATES[k] for k, on in offer.items() if not on]
    return without_states(profile, lambda s: any(test(s) for test in drop)) if drop else profile


def without_recompute(profile: ModelProfile) -> ModelProfile:
    """The profile with every +recompute state removed (what `--no-recompute` plans with)."""
    return without_states(profile, is_recompute)


def without_quantized(profile: ModelProfile) -> ModelProfile:
    """The profile with every +int8 state removed (what `--no-quantized` plans with)."""
    return without_states(profile, is_quantized)
