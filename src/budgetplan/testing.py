"""Synthetic but valid ModelProfiles for tests and benchmarks (no profiler, nothing downloaded).

Costs are random, deterministic by seed, and loosely shaped like a real profile (frozen_outside runs no
backward, trained costs more than LoRA) so that budgets between "head only" and "everything" are interesting.
The random flags (saves_input / saves_output) and shared saved tensors of varying size exercise the boundary
dedup and the shared-tensor union in the peak model. Random held tensors (what a model's forward code keeps
live at a block's start: earlier hidden states, masks, other bytes) exercise compose.held_bytes; the bundled
MiniLM profile holds the embeddings' output (boundary 0) at every block after the first, GPT-2 profiles also
hold token and position embeddings as other bytes.
With recompute=True every trainable state also gets its +recompute variant, shaped like a measured one: the
same forward, the forward again inside the backward, only the block's input (and shared inputs) kept, and the
kept activations alive again as backward extra bytes (drawn from a separate stream: the other costs stay).
With quantized=True every frozen and LoRA state (recomputing or not) also gets its +int8 variant, shaped like a
measured one: a quarter of the base weights' bytes plus scales, one FLOP per base weight for each dequantisation
(forward, and backward where a gradient passes), a dequantised layer's weight as extra forward/backward bytes.
"""

from __future__ import annotations

import random
from dataclasses import replace

from budgetplan.profile.types import (
    FROZEN_IN_PATH,
    FROZEN_OUTSIDE,
    INPUT_GRAD,
    NO_INPUT_GRAD,
    PRE_INT8,
    SCHEMA_VERSION,
    TRAINED,
    BlockProfile,
    ModelInfo,
    ModelProfile,
    PartCost,
    ProfileContext,
    boundaries_of,
    can_quantize,
    is_trainable,
    lora_rank,
    lora_state,
    quantized_state,
    recompute_state,
)

SHARED_NAMES = ("attention_mask", "rotary")


def _part(rng: random.Random, state: str, boundary: str, params: int, optimizer_factor: int) -> PartCost:
    rank = lora_rank(state)
    trained = state == TRAINED
    trainable_params = params if trained else (rank * 2 * 64 * 4 if rank else 0)
    forward = rng.randint(800, 1200) * 1_000_000
    backward_factor = {FROZEN_OUTSIDE: 0.0, FROZEN_IN_PATH: 1.0, TRAINED: 2.0}.get(state, 1.2)
    if boundary == NO_INPUT_GRAD and state != FROZEN_OUTSIDE:
        backward_factor -= 0.8
    grad = trainable_params > 0 or boundary == INPUT_GRAD
    shared = {name: rng.choice((0, 256, 512, 1024)) for name in SHARED_NAMES if grad and rng.random() < 0.6}
    return PartCost(
        flops_forward=forward,
        flops_backward=int(forward * backward_factor * rng.uniform(0.8, 1.2)),
        activation_bytes=rng.randint(2_000, 9_000) if grad else 0,
        saves_input=grad and rng.random() < 0.5,
        saves_output=grad and rng.random() < 0.5,
        shared_saved_bytes={k: v for k, v in shared.items() if v},
        forward_extra_bytes=rng.randint(500, 4_000),
        backward_extra_bytes=rng.randint(500, 6_000) if grad else 0,
        step_extra_bytes=rng.randint(100, 2_000) if trainable_params else 0,
        param_bytes=params * 4 + trainable_params * 4 * (rank is not None),
        trainable_params=trainable_params,
        trainable_bytes=trainable_params * 4,
        optimizer_state_bytes=trainable_params * 4 * optimizer_factor,
    )


def _recomputed(rng: random.Random, cost: PartCost) -> PartCost:
    """The +recompute variant of a trainable part's cost (see the module docstring)."""
    return replace(
        cost,
        flops_backward=cost.flops_backward + cost.flops_forward,
        activation_bytes=rng.choice((0, 0, rng.randint(1, 400))),
        saves_input=True,
        saves_output=False,
        forward_extra_bytes=max(1, cost.forward_extra_bytes - rng.randint(0, 400)),
        backward_extra_bytes=cost.backward_extra_bytes + cost.activation_bytes + rng.randint(0, 1_000),
    )


def _quantized(rng: random.Random, cost: PartCost, base_params: int, boundary: str) -> PartCost:
    """The +int8 variant of a frozen or LoRA part's cost (see the module docstring)."""
    layer = base_params * 4 // rng.randint(4, 8)  # one dequantised layer's full-precision weight
    backward = cost.flops_backward > 0 or boundary == INPUT_GRAD
    return replace(
        cost,
        flops_forward=cost.flops_forward + base_params,
        flops_backward=cost.flops_backward + (base_params if backward else 0),
        forward_extra_bytes=max(cost.forward_extra_bytes, layer + rng.randint(0, 400)),
        backward_extra_bytes=max(cost.backward_extra_bytes, layer) if backward else cost.backward_extra_bytes,
        param_bytes=cost.param_bytes - base_params * 3 + rng.randint(4, 40),
    )


def _states(rng, state_names, params, optimizer_factor, name_prefix, recompute_rng=None, quantize_rng=None):
    states, names = {}, {}
    for state in state_names:
        states[state] = {b: _part(rng, state, b, params, optimizer_factor) for b in boundaries_of(state)}
        if state == TRAINED:
            names[state] = (f"{name_prefix}.weight", f"{name_prefix}.bias")
        elif lora_rank(state):
            names[state] = (f"{name_prefix}.lora_A.weight", f"{name_prefix}.lora_B.weight")
    for state in [s for s in state_names if is_trainable(s)] if recompute_rng else ():
        states[recompute_state(state)] = {b: _recomputed(recompute_rng, c) for b, c in states[state].items()}
        names[recompute_state(state)] = names[state]
    for state in [s for s in states if can_quantize(s)] if quantize_rng else ():
        states[quantized_state(state)] = {b: _quantized(quantize_rng, c, params, b) for b, c in states[state].items()}
        if state in names:
            names[quantized_state(state)] = names[state]
    return states, names


def _held(seed: int, num_blocks: int) -> dict:
    """Random held tensors per block, from their own stream so the part costs stay those of the seed.

    Block b holds a subset of the earlier boundaries 0..b (b itself sometimes: compose skips it, it is the
    block's live input), shared inputs sized like the saved ones (so both "already kept" and "held beyond the
    kept" occur) and sometimes other bytes."""
    rng = random.Random(seed * 7919 + 1)
    hidden = tuple(tuple(i for i in range(b + 1) if rng.random() < (0.3 if i < b else 0.2)) for b in range(num_blocks))
    shared = tuple({n: rng.choice((256, 512, 1024, 2048)) for n in SHARED_NAMES if rng.random() < 0.5}
                   for _ in range(num_blocks))
    other = tuple(rng.choice((0, 0, rng.randint(100, 3_000))) for _ in range(num_blocks))
    return {"held_hidden": hidden, "held_shared_bytes": shared, "held_other_bytes": other}


def make_profile(
    num_blocks: int = 4,
    lora_ranks: tuple[int, ...] = (4,),
    seed: int = 0,
    train_embeddings: bool = False,
    optimizer_factor: int = 2,
    name: str = "synthetic",
    held: bool = True,
    recompute: bool = False,
    quantized: bool = False,
) -> ModelProfile:
    """A random profile with states frozen_outside, frozen_in_path, trained and lora-R for each R
    (with random held tensors unless held=False, the +recompute variants with recompute=True, the +int8 variants
    with quantized=True)."""
    rng = random.Random(seed)
    recompute_rng = random.Random(seed * 104729 + 3) if recompute else None
    quantize_rng = random.Random(seed * 7907 + 11) if quantized else None
    state_names = (FROZEN_OUTSIDE, FROZEN_IN_PATH, TRAINED, *(lora_state(r) for r in lora_ranks))
    blocks = []
    for index in range(num_blocks):
        params = rng.randint(100, 300)
        states, names = _states(rng, state_names, params, optimizer_factor, f"encoder.layer.{index}", recompute_rng,
                                quantize_rng)
        blocks.append(BlockProfile(index=index, name=f"encoder.layer.{index}", states=states, trainable_names=names))
    pre = {state: {NO_INPUT_GRAD: _part(rng, state, NO_INPUT_GRAD, 500, optimizer_factor)}
           for state in (FROZEN_OUTSIDE, TRAINED)}
    if quantize_rng:  # frozen embeddings in int8: three quarters of their bytes less, a multiply per gathered row
        frozen = pre[FROZEN_OUTSIDE][NO_INPUT_GRAD]
        pre[PRE_INT8] = {NO_INPUT_GRAD: replace(frozen, param_bytes=frozen.param_bytes // 4 + quantize_rng.randint(4, 40),
                                                flops_forward=frozen.flops_forward + quantize_rng.randint(64, 512))}
    post = {b: _part(rng, TRAINED, b, 50, optimizer_factor) for b in (INPUT_GRAD, NO_INPUT_GRAD)}
    return ModelProfile(
        schema_version=SCHEMA_VERSION,
        generator="budgetplan.testing",
        model=ModelInfo(name=name, fingerprint=f"sha256:{name}-{seed}-{num_blocks}", num_blocks=num_blocks,
                        block_path="encoder.layer", family="bert", num_params=10_000, library_versions={}),
        context=ProfileContext(batch_size=8, seq_len=64, image_size=None, dtype="float32", optimizer="adam",
                               num_labels=2, task="classification", train_embeddings=train_embeddings,
                               lora_ranks=tuple(lora_ranks), lora_alpha_per_rank=2.0,
                               lora_targets=("attention.self.query", "attention.self.value"), device="cpu"),
        pre=pre,
        post=post,
        blocks=tuple(blocks),
        resident_bytes=rng.randint(50_000, 80_000),
        boundary_bytes=rng.randint(1_000, 3_000),
        pre_trainable_names=("embeddings.word_embeddings.weight",),
        post_trainable_names=("classifier.weight", "classifier.bias"),
        **(_held(seed, num_blocks) if held else {}),
    )


def _transformer_part(state: str, boundary: str, shape: dict, block_params: int) -> PartCost:
    """Analytic costs of one BERT-style block: FLOPs = 2 x MACs of the linears and attention matmuls."""
    b, s, h = shape["batch"], shape["seq"], shape["hidden"]
    forward = 24 * b * s * h * h + 4 * b * s * s * h
    rank = lora_rank(state)
    trainable = block_params if state == TRAINED else (rank * 2 * h * 2 if rank else 0)
    grad = trainable > 0 or boundary == INPUT_GRAD
    backward_factor = {FROZEN_OUTSIDE: 0.0, FROZEN_IN_PATH: 1.0, TRAINED: 2.0}.get(state, 1.05)
    if boundary == NO_INPUT_GRAD and state != FROZEN_OUTSIDE:
        backward_factor -= 0.25
    scores = b * (h // 64) * s * s * 4
    return PartCost(
        flops_forward=forward,
        flops_backward=int(forward * backward_factor),
        activation_bytes=(10 * b * s * h * 4 + 2 * scores + (2 * b * s * rank * 4 if rank else 0)) if grad else 0,
        saves_input=grad,
        saves_output=False,
        shared_saved_bytes={"attention_mask": b * s * 4} if grad else {},
        forward_extra_bytes=scores + 4 * b * s * h * 4,
        backward_extra_bytes=(2 * scores + 4 * b * s * h * 4) if grad else 0,
        step_extra_bytes=4 * h * h * 4 if trainable else 0,
        param_bytes=(block_params + (trainable if rank else 0)) * 4,
        trainable_params=trainable,
        trainable_bytes=trainable * 4,
        optimizer_state_bytes=trainable * 4 * 2,
    )


def make_transformer_profile(num_blocks: int = 6, hidden: int = 384, seq_len: int = 128, batch_size: int = 16,
                             lora_ranks: tuple[int, ...] = (4, 8), name: str = "bert-like") -> ModelProfile:
    """A deterministic profile of a BERT-style encoder at real scale (identical blocks, fp32, Adam)."""
    shape = {"batch": batch_size, "seq": seq_len, "hidden": hidden}
    block_params = 12 * hidden * hidden + 13 * hidden
    state_names = (FROZEN_OUTSIDE, FROZEN_IN_PATH, TRAINED, *(lora_state(r) for r in lora_ranks))
    blocks = tuple(
        BlockProfile(
            index=i, name=f"encoder.layer.{i}",
            states={st: {bd: _transformer_part(st, bd, shape, block_params) for bd in boundaries_of(st)}
                    for st in state_names},
            trainable_names={st: (f"encoder.layer.{i}.weight",) for st in state_names[2:]},
        )
        for i in range(num_blocks)
    )
    base = make_profile(num_blocks=1, name=name)
    embed_params = 30522 * hidden
    head_params = hidden * hidden + 3 * hidden
    pre_frozen = PartCost(batch_size * seq_len * hidden * 6, 0, 0, False, False, {}, batch_size * seq_len * hidden * 8,
                          0, 0, embed_params * 4, 0, 0, 0)
    pre_trained = PartCost(pre_frozen.flops_forward, pre_frozen.flops_forward, batch_size * seq_len * hidden * 8,
                           False, True, {}, pre_frozen.forward_extra_bytes, batch_size * seq_len * hidden * 8,
                           30522 * hidden * 4, embed_params * 4, embed_params, embed_params * 4, embed_params * 8)
    post = {bd: PartCost(2 * batch_size * head_params, 2 * batch_size * head_params * (2 if bd == INPUT_GRAD else 1),
                         batch_size * hidden * 8, False, False, {}, batch_size * hidden * 4, batch_size * hidden * 4,
                         hidden * hidden * 4, head_params * 4, head_params, head_params * 4, head_params * 8)
            for bd in (INPUT_GRAD, NO_INPUT_GRAD)}
    params = embed_params + num_blocks * block_params + head_params
    return ModelProfile(
        schema_version=SCHEMA_VERSION, generator="budgetplan.testing",
        model=ModelInfo(name=name, fingerprint=f"sha256:{name}-{num_blocks}-{hidden}", num_blocks=num_blocks,
                        block_path="encoder.layer", family="bert", num_params=params, library_versions={}),
        context=base.context.__class__(**{**base.context.__dict__, "batch_size": batch_size, "seq_len": seq_len,
                                          "lora_ranks": tuple(lora_ranks)}),
        pre={FROZEN_OUTSIDE: {NO_INPUT_GRAD: pre_frozen}, TRAINED: {NO_INPUT_GRAD: pre_trained}},
        post=post, blocks=blocks,
        resident_bytes=params * 4 + batch_size * seq_len * 8,
        boundary_bytes=batch_size * seq_len * hidden * 4,
        pre_trainable_names=base.pre_trainable_names, post_trainable_names=base.post_trainable_names,
    )


def with_recompute(profile: ModelProfile) -> ModelProfile:
    """The profile with a +recompute variant of every trainable block state, derived from the state itself:
    the forward again inside the backward, only the block's input kept, its activations alive again in its
    backward (what the profiler measures, without the measuring noise). Used for real-scale synthetic profiles
    (make_transformer_profile) in the planner's benchmark and tests."""
    def recomputed(cost: PartCost) -> PartCost:
        return replace(cost, flops_backward=cost.flops_backward + cost.flops_forward, activation_bytes=0,
                       saves_input=True, saves_output=False,
                       backward_extra_bytes=cost.backward_extra_bytes + cost.activation_bytes)

    blocks = []
    for block in profile.blocks:
        extra = {recompute_state(s): {b: recomputed(c) for b, c in by.items()}
                 for s, by in block.states.items() if is_trainable(s)}
        names = {**block.trainable_names, **{recompute_state(s): n for s, n in block.trainable_names.items()}}
        blocks.append(replace(block, states={**block.states, **extra}, trainable_names=names))
    return replace(profile, blocks=tuple(blocks))
