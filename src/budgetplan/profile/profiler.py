"""The profile stage: measure every distinct part once per state and boundary, then compose configurations.

Runs: one full forward (pre, frozen; it records every block's inputs and outputs), three runs that skip the
blocks (pre trained, post under both boundaries), and per *distinct* block each state under each boundary
(frozen_outside, frozen_in_path, trained twice, each LoRA rank twice). Blocks of the same module type,
structure, parameter shapes and dtypes, given inputs of the same shapes and dtypes, do the same work and
keep the same tensors, so one measurement stands for all of them (tests compare against measuring each
block). Runs never grow with the number of configurations, which are composed.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import peft
import torch
import transformers

from budgetplan.models.bundled import bundled_names
from budgetplan.models.load import LoadedModel
from budgetplan.profile import compose as composer
from budgetplan.profile.batch import check_context, make_batch, sequence_length
from budgetplan.profile.configure import (
    LORA_ALPHA_PER_RANK, apply_block_states, linear_targets, part_names, set_recompute,
)
from budgetplan.profile.measure import OPTIMIZERS, measure_training_step
from budgetplan.profile.memory import storage_bytes
from budgetplan.profile.groups import block_groups
from budgetplan.profile.capture import first_tensor
from budgetplan.profile.parts import PreRun, measure_block, measure_post, measure_pre
from budgetplan.profile.quantize import quantizable_embeddings, quantize_embeddings
from budgetplan.errors import ConfigError, ProfileError
from budgetplan.profile.types import (
    FROZEN, FROZEN_IN_PATH, FROZEN_OUTSIDE, INPUT_GRAD, NO_INPUT_GRAD, PRE_INT8, SCHEMA_VERSION, TRAINED, BlockProfile,
    ModelInfo, ModelProfile, PartCost, ProfileContext, base_state, boundaries_of, can_quantize, is_recompute,
    is_trainable, lora_state, parse_state, quantized_state, recompute_state,
)
from budgetplan.version import __version__

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ProfileRequest:
    batch_size: int = 8
    seq_len: int | None = 128
    optimizer: str = "adamw"
    lora_ranks: tuple[int, ...] = (4, 8, 16)
    train_embeddings: bool = False
    measure_configs: bool = True  # also run each standard configuration once to measure its real peak
    recompute: bool = True  # also measure every trainable state with activation recomputation (+recompute)
    quantized: bool = True  # also measure every frozen and LoRA state with int8 frozen weights (+int8)
    share_identical_blocks: bool = True  # False: measure every block, even identical ones (for checking)

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"--optimizer {self.optimizer}: unknown; use one of {', '.join(OPTIMIZERS)}")
        bad = [r for r in self.lora_ranks if r < 1]
        if bad:
            raise ConfigError(f"--lora-ranks: ranks must be positive integers, got {bad[0]}")

    @property
    def block_states(self) -> tuple[str, ...]:
        trainable = (TRAINED, *(lora_state(r) for r in self.lora_ranks))
        recomputed = tuple(recompute_state(s) for s in trainable) if self.recompute else ()
        plain = (FROZEN_OUTSIDE, FROZEN_IN_PATH, *trainable, *recomputed)
        quantised = tuple(quantized_state(s) for s in plain if can_quantize(s)) if self.quantized else ()
        return (*plain, *quantised)


def count_part_runs(loaded: LoadedModel, request: ProfileRequest) -> int:
    """Direct runs profile_model makes (blocks grouped by structure; input shapes may split a group further)."""
    per_block = sum(len(boundaries_of(s)) for s in request.block_states)
    distinct = len(set(block_groups(loaded.blocks, None, request.share_identical_blocks)))
    pre_int8 = request.quantized and not request.train_embeddings and bool(linear_targets(loaded)) and bool(
        quantizable_embeddings(loaded.model, part_names(loaded).pre))
    return 2 + 2 + int(pre_int8) + distinct * per_block


def count_config_runs(num_blocks: int, request: ProfileRequest) -> int:
    """Direct runs of the standard configurations (compose.standard_configs), 0 without measure_configs."""
    others = sum(is_trainable(s) and s != TRAINED for s in request.block_states)
    return num_blocks + 1 + others if request.measure_configs else 0


def _variant(loaded: LoadedModel, state: str) -> LoadedModel:
    """A copy of the model with every block in `state` (frozen states share the frozen copy)."""
    variant = copy.deepcopy(loaded)
    apply_block_states(variant, (_copy_key(state),) * loaded.layout.num_blocks)
    return variant


def _copy_key(state: str) -> str:
    """The configuration of the copy `state` is measured on: 'frozen' or 'frozen+int8' for frozen states, the
    state without +recompute for trainable ones."""
    parsed = parse_state(state)
    return base_state(state) if parsed.trainable else replace(parsed, base=FROZEN).name


def _by_copy(states: tuple[str, ...]) -> dict[str, list[str]]:
    """States grouped by the model copy they are measured on: a +recompute state shares its base state's copy,
    frozen states share one copy (and +int8 frozen states another).

    apply_block_states gives X and X+recompute the same weights, adapters and trainable parameters; the only
    difference is the checkpointed forward, which set_recompute switches on the same copy (no second deep
    copy, LoRA injection and configuration per recomputing state).
    """
    groups: dict[str, list[str]] = {}
    for state in states:
        groups.setdefault(_copy_key(state), []).append(state)
    return groups


def _block_profiles(loaded, request, run: PreRun, tick: Progress) -> tuple[tuple[BlockProfile, ...], int]:
    """Every block's costs, measuring one block per group of identical ones; returns (profiles, runs made)."""
    n = loaded.layout.num_blocks
    groups = block_groups(loaded.blocks, run.calls, request.share_identical_blocks)
    states: list[dict] = [dict() for _ in range(n)]
    names: list[dict] = [dict() for _ in range(n)]
    runs = 0
    for base, members in _by_copy(request.block_states).items():
        variant = _variant(loaded, base)
        for state in members:
            for block in variant.blocks:
                set_recompute(block, is_recompute(state))
            runs += _measure_state(loaded, variant, state, groups, run, request, tick, states, names)
    order = request.block_states
    profiles = tuple(BlockProfile(i, f"{loaded.layout.path}.{i}", {s: states[i][s] for s in order},
                                  {s: names[i][s] for s in order if s in names[i]}) for i in range(n))
    return profiles, runs


def _measure_state(loaded, variant, state, groups, run: PreRun, request, tick, states, names) -> int:
    """Measure `state` on the first block of each group (filling `states` and `names`); returns runs made."""
    runs = 0
    for i, block in enumerate(variant.blocks):
        if groups[i] != i:
            states[i][state] = _renamed(states[groups[i]][state], run.calls[groups[i]].renaming(run.calls[i]))
        else:
            states[i][state] = {}
            for boundary in boundaries_of(state):
                tick(f"block {i} {state} ({boundary.replace('_', ' ')})")
                states[i][state][boundary] = measure_block(block, run.calls[i], boundary, request.optimizer,
                                                           run.extra_leaves[i])
                runs += 1
        if is_trainable(state):
            prefix = f"{loaded.layout.path}.{i}."
            names[i][state] = tuple(n for n, p in variant.model.named_parameters()
                                    if p.requires_grad and n.startswith(prefix))
    return runs


def _renamed(costs: dict[str, PartCost], names: dict[str, str]) -> dict[str, PartCost]:
    """A group's measured costs for another member: its shared inputs named as that member's (same shapes, but
    maybe other tensors, e.g. the other of two alternating masks)."""
    return {boundary: replace(cost, shared_saved_bytes={names.get(k, k): v for k, v in cost.shared_saved_bytes.items()})
            for boundary, cost in costs.items()}


def profile_model(loaded: LoadedModel, request: ProfileRequest, tick: Progress = lambda _: None) -> ModelProfile:
    """Measure `loaded` under `request` and compose the standard configurations."""
    check_context(loaded, request.batch_size, request.seq_len)
    check_blocks_own_their_weights(loaded)
    if request.quantized and not linear_targets(loaded):
        request = replace(request, quantized=False)  # no linear to hold in int8: the model lacks +int8 states
    started = time.perf_counter()
    batch = make_batch(loaded, request.batch_size, request.seq_len)
    parts = part_names(loaded)
    if request.train_embeddings:
        check_embeddings_untied(loaded, parts.pre)
    work = _variant(loaded, FROZEN_OUTSIDE)
    tick("pre (embeddings) frozen")
    pre_frozen, run = measure_pre(work, batch, request.optimizer, parts.pre, train=False)
    tick("pre (embeddings) trained")
    pre_trained, _ = measure_pre(work, batch, request.optimizer, parts.pre, train=True, outputs=run.outputs)
    pre = {FROZEN_OUTSIDE: {NO_INPUT_GRAD: pre_frozen}, TRAINED: {NO_INPUT_GRAD: pre_trained}}
    pre.update(_pre_int8(work, batch, request, parts.pre, run.outputs, tick))
    post = {}
    for boundary in (INPUT_GRAD, NO_INPUT_GRAD):
        tick(f"post (head and loss, {boundary.replace('_', ' ')})")
        post[boundary] = measure_post(work, batch, request.optimizer, parts.post, boundary, outputs=run.outputs)
    blocks, block_runs = _block_profiles(loaded, request, run, tick)
    parts_seconds = time.perf_counter() - started
    calls, held = run.calls, run.held
    profile = ModelProfile(
        schema_version=SCHEMA_VERSION, generator=f"budgetplan {__version__}",
        model=_model_info(loaded), context=_context(loaded, request),
        pre=pre, post=post, blocks=blocks,
        resident_bytes=storage_bytes([*loaded.model.parameters(), *loaded.model.buffers(), *batch.values()]),
        boundary_bytes=calls[0].hidden.untyped_storage().nbytes(),
        pre_trainable_names=parts.pre, post_trainable_names=parts.post, held_hidden=tuple(h.hidden for h in held),
        held_shared_bytes=tuple(h.shared for h in held), held_other_bytes=tuple(h.other_bytes for h in held),
        held_previous_outputs=tuple(h.previous_outputs for h in held), boundary_sizes=_boundary_sizes(run),
        measurement={"part_runs": 2 + len(pre) + block_runs, "block_runs": block_runs,
                     "distinct_blocks": len(set(block_groups(loaded.blocks, calls, request.share_identical_blocks))),
                     "part_seconds": round(parts_seconds, 3)},
    )
    return with_standard_configs(profile, loaded, batch, request, tick)


def _boundary_sizes(run: PreRun) -> tuple[int, ...]:
    """Bytes of each block's input and of the last block's output, when they are not all the same size."""
    sizes = [c.hidden.untyped_storage().nbytes() for c in run.calls]
    sizes.append(first_tensor(run.outputs[-1]).untyped_storage().nbytes())
    return tuple(sizes) if len(set(sizes)) > 1 else ()


def _pre_int8(work: LoadedModel, batch: dict, request: ProfileRequest, pre_names, outputs, tick: Progress) -> dict:
    """{PRE_INT8: cost} of the frozen embeddings held in int8, or {} (no +int8 states, trained embeddings, or no
    embedding table that can be held in int8)."""
    tables = quantizable_embeddings(work.model, pre_names)
    if not (request.quantized and tables) or request.train_embeddings:
        return {}
    quantised = copy.deepcopy(work)
    quantize_embeddings(quantised.model, tables)
    tick("pre (embeddings) frozen, int8")
    cost, _ = measure_pre(quantised, batch, request.optimizer, pre_names, train=False, outputs=outputs)
    return {PRE_INT8: {NO_INPUT_GRAD: cost}}


def check_embeddings_untied(loaded: LoadedModel, pre_names: tuple[str, ...]) -> None:
    """Refuse --train-embeddings when an embedding weight is tied to a later module (a tied LM head)."""
    aliases: dict[int, list[str]] = {}
    for name, param in loaded.model.named_parameters(remove_duplicate=False):
        aliases.setdefault(id(param), []).append(name)
    for names in aliases.values():
        if len(names) > 1 and names[0] in pre_names:
            raise ProfileError(
                f"the embedding weight '{names[0]}' is tied to '{names[1]}' (an output head sharing the input "
                "embeddings); training it trains two parts at once, which budgetplan does not compose: profile "
                "without --train-embeddings (the tied head then stays frozen with the embeddings)")


def check_blocks_own_their_weights(loaded: LoadedModel) -> None:
    """Refuse blocks that share a parameter: one state per block could not describe what trains."""
    owner: dict[int, int] = {}
    for index, block in enumerate(loaded.blocks):
        for name, param in block.named_parameters():
            first = owner.setdefault(id(param), index)
            if first != index:
                raise ProfileError(
                    f"blocks {first} and {index} of '{loaded.layout.path}' share the parameter '{name}' (tied "
                    "layers, as in ALBERT); budgetplan gives each block one state and would count the shared "
                    "weights twice: use a model whose layers each have their own weights")


def with_standard_configs(profile: ModelProfile, loaded: LoadedModel, batch: dict, request: ProfileRequest,
                          tick: Progress) -> ModelProfile:
    configs = []
    started = time.perf_counter()
    for states in composer.standard_configs(profile):
        cost = composer.compose(profile, states)
        if request.measure_configs:
            tick(f"measure step: {describe_states(cost.block_states)}")
            cost = replace(cost, peak_bytes_measured=measure_config(loaded, states, batch, request).peak_bytes)
        configs.append(cost)
    measurement = {**profile.measurement, "config_runs": len(configs) if request.measure_configs else 0,
                   "config_seconds": round(time.perf_counter() - started, 3)}
    return replace(profile, configs=tuple(configs), measurement=measurement)


def measure_config(loaded: LoadedModel, states, batch: dict, request: ProfileRequest):
    """Directly measure one configuration's training step on a fresh copy of the model."""
    fresh = copy.deepcopy(loaded)
    apply_block_states(fresh, tuple(states), train_embeddings=request.train_embeddings)
    return measure_training_step(fresh.model, batch, request.optimizer)


def describe_states(states: tuple[str, ...]) -> str:
    trained = [i for i, s in enumerate(states) if s == TRAINED]
    others = sorted({s for s in states if is_trainable(s) and s != TRAINED})
    if others and len(others) == 1 and all(s == others[0] for s in states):
        return f"{others[0]} on all blocks"
    if not trained and not others:
        return "head only"
    if len(trained) == len(states):
        return "full"
    return f"train blocks {','.join(map(str, trained))}" + (f" + {','.join(others)}" if others else "")


def _model_info(loaded: LoadedModel) -> ModelInfo:
    return ModelInfo(
        name=loaded.name, fingerprint=loaded.fingerprint, num_blocks=loaded.layout.num_blocks,
        block_path=loaded.layout.path, family=loaded.family,
        num_params=sum(p.numel() for p in loaded.model.parameters()),
        library_versions={"torch": torch.__version__, "transformers": transformers.__version__,
                          "peft": peft.__version__, "budgetplan": __version__},
        source=None if loaded.name in bundled_names() else loaded.source,
    )


def _context(loaded: LoadedModel, request: ProfileRequest) -> ProfileContext:
    text = loaded.input_kind != "image"
    return ProfileContext(
        batch_size=request.batch_size, seq_len=sequence_length(loaded, request.seq_len),
        image_size=None if text else loaded.image_size, dtype=str(next(loaded.model.parameters()).dtype),
        optimizer=request.optimizer, num_labels=loaded.model.num_labels, task=loaded.model.task,
        head_source=loaded.model.head_source,
        train_embeddings=request.train_embeddings, lora_ranks=tuple(request.lora_ranks),
        lora_alpha_per_rank=LORA_ALPHA_PER_RANK, lora_targets=linear_targets(loaded), device="cpu",
    )
