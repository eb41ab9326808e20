"""Put a task model into a configuration: a state per block, LoRA where asked, the head always trained.

A "+recompute" state wraps the block's forward in torch.utils.checkpoint (use_reentrant=False) while the model
trains: the block keeps only its tensor inputs for backward and runs its forward again during backward.
A "+int8" state holds the block's frozen linear weights in int8 (profile/quantize.py).

Parts: "pre" is every parameter outside the blocks that runs before the first block (embeddings), "post"
every parameter outside the blocks that runs after the last one (final norm, head). Embeddings are frozen
unless train_embeddings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint
from torch.utils._pytree import tree_flatten, tree_unflatten

from budgetplan.errors import ConfigError, ProfileError
from budgetplan.models.load import LoadedModel
from budgetplan.profile.quantize import quantizable_embeddings, quantize_block, quantize_embeddings
from budgetplan.profile.types import TRAINED, parse_state
from budgetplan.profile.uses import PRE, parameter_use

LORA_ALPHA_PER_RANK = 2.0  # alpha = 2 x rank, the common choice; recorded in profiles and plans
ADAPTER = "default"


@dataclass(frozen=True)
class PartNames:
    """Parameter names of the task model, by part."""

    pre: tuple[str, ...]
    blocks: tuple[tuple[str, ...], ...]
    post: tuple[str, ...]


def lora_targets(loaded: LoadedModel) -> tuple[str, ...]:
    """Names, relative to a block, of the linear layers LoRA adapts (attention and MLP projections).

    Only linears that run as modules: nn.MultiheadAttention reads out_proj.weight functionally, so an
    adapter there would never run nor get a gradient (and would be counted and uploaded for nothing).
    """
    names = linear_targets(loaded)
    if not names:
        raise ConfigError(f"block class {loaded.layout.block_class} has no linear layers that run as modules "
                          "for LoRA to adapt; profile without LoRA states (--lora-ranks '')")
    return names


def linear_targets(loaded: LoadedModel) -> tuple[str, ...]:
    """lora_targets without the refusal: () when a block has no linear that runs as a module (such a block has
    no LoRA and no +int8 states)."""
    block, prefix = loaded.blocks[0], f"{loaded.layout.path}.0."
    ran = parameter_use(loaded).modules_run
    return tuple(name for name, module in block.named_modules() if _is_linear(module) and prefix + name in ran)


def _is_linear(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def part_names(loaded: LoadedModel) -> PartNames:
    """Split parameters into pre / blocks / post by where the forward pass first reads them (profile/uses.py).

    A side-route parameter (its value reaches later blocks by an input other than the hidden state) is in no
    part: it is never trained, and what it produces is measured as an input the blocks share. Nor is a
    parameter outside the blocks that the forward never reads.
    """
    model, prefix = loaded.model, loaded.layout.path + "."
    use = parameter_use(loaded)
    side = set(use.side_routes)
    check_side_routes(loaded, side)
    blocks = tuple(
        tuple(n for n in (f"{prefix}{i}.{m}" for m, _ in block.named_parameters()) if n not in side)
        for i, block in enumerate(loaded.blocks)
    )
    in_blocks = {n for i, block in enumerate(loaded.blocks) for n in (f"{prefix}{i}.{m}" for m, _ in
                                                                       block.named_parameters())}
    pre, post = [], []
    for name, _ in model.named_parameters():
        if name in in_blocks or name in side or "lora_" in name or name not in use.phase:
            continue  # a parameter no op reads (e.g. a mask token for masked pretraining) is never trained
        (pre if use.phase[name] == PRE else post).append(name)
    return PartNames(tuple(pre), blocks, tuple(post))


def check_side_routes(loaded: LoadedModel, side: set[str]) -> None:
    """Refuse a model whose blocks pass each other more than a few parameters' worth by a side route (e.g. a
    block fed the previous block's output besides its hidden state): freezing those would freeze the blocks."""
    prefix = loaded.layout.path + "."
    for i, block in enumerate(loaded.blocks):
        names = [f"{prefix}{i}.{m}" for m, _ in block.named_parameters()]
        routed = [n for n in names if n in side]
        if routed and 2 * len(routed) > len(names):
            raise ProfileError(
                f"block {i} of '{loaded.layout.path}' feeds later blocks through an input other than the hidden "
                f"state ({routed[0]} and {len(routed) - 1} more reach them); budgetplan composes blocks joined by "
                "the hidden state only: point --blocks at a stack whose blocks take one hidden state")


def inject_lora(loaded: LoadedModel, ranks: dict[int, int], alpha_per_rank: float = LORA_ALPHA_PER_RANK) -> None:
    """Add LoRA adapters (rank per block index) to the attention and MLP linears of those blocks."""
    if not ranks:
        return
    prefix = loaded.layout.path
    targets = lora_targets(loaded)
    names = {f"{prefix}.{i}.{t}": r for i, r in ranks.items() for t in targets}
    first = next(iter(names.values()))
    from peft import LoraConfig, inject_adapter_in_model  # only LoRA plans need peft (an import of seconds)

    config = LoraConfig(
        r=first,
        lora_alpha=alpha_per_rank * first,
        target_modules=list(names),
        rank_pattern={re.escape(n): r for n, r in names.items()},
        alpha_pattern={re.escape(n): alpha_per_rank * r for n, r in names.items()},
        lora_dropout=0.0,
        fan_in_fan_out=any(type(m).__name__ == "Conv1D" for m in loaded.blocks[0].modules()),
    )
    inject_adapter_in_model(config, loaded.model, adapter_name=ADAPTER)


def apply_block_states(loaded: LoadedModel, states: tuple[str, ...], train_embeddings: bool = False,
                       alpha_per_rank: float = LORA_ALPHA_PER_RANK, int8_embeddings: bool = False) -> tuple[str, ...]:
    """Configure `loaded.model` in place; returns the names of the trained parameters, in model order.

    A "+int8" block gets its linears (lora_targets) replaced by int8 copies of their current weights
    (profile/quantize.py): load the weights first, then configure. int8_embeddings holds the frozen embedding
    tables in int8 (quantize.quantizable_embeddings: those not tied to another module). LoRA is injected into a
    model that has none yet (load a fresh model per configuration).
    """
    if len(states) != loaded.layout.num_blocks:
        raise ConfigError(f"{len(states)} block states given for a model with {loaded.layout.num_blocks} blocks")
    if int8_embeddings and train_embeddings:
        raise ConfigError("embeddings cannot be both trained and held in int8; drop one of the two")
    parsed = [_parse(i, s) for i, s in enumerate(states)]
    ranks = {i: p.lora_rank for i, p in enumerate(parsed) if p.lora_rank is not None}
    quantised = [i for i, p in enumerate(parsed) if p.quant]
    targets = linear_targets(loaded) if quantised else ()  # before LoRA: peft's wrappers hold linears of their own
    inject_lora(loaded, ranks, alpha_per_rank)
    parts = part_names(loaded)
    trained = set(parts.post) | (set(parts.pre) if train_embeddings else set())
    prefix = loaded.layout.path + "."
    for i, state in enumerate(parsed):
        if state.base == TRAINED:
            trained.update(parts.blocks[i])
        elif i in ranks:
            block_prefix = f"{prefix}{i}."
            trained.update(n for n, _ in loaded.model.named_parameters()
                           if n.startswith(block_prefix) and "lora_" in n)
        set_recompute(loaded.blocks[i], state.recompute)
    for i in quantised:
        quantize_block(loaded.blocks[i], targets)
    if int8_embeddings:
        quantize_embeddings(loaded.model, quantizable_embeddings(loaded.model, parts.pre))
    for name, param in loaded.model.named_parameters():
        param.requires_grad_(name in trained)
    return tuple(n for n, p in loaded.model.named_parameters() if p.requires_grad)


def _parse(index: int, state: str):
    try:
        return parse_state(state)
    except ValueError as exc:
        raise ConfigError(f"block {index}: {exc}") from None


class RecomputedForward:
    """A block's forward run under torch.utils.checkpoint while training with gradients.

    Every tensor input (the hidden state and the shared ones given as keyword arguments: masks, rotary
    tables) is passed to checkpoint positionally, so checkpoint saves it for backward like any saved tensor
    (and the profiler sees what it keeps). It refers to its block, not to a bound method, so deep copies and
    pickles of the model rebind it to the copied block.
    """

    def __init__(self, block: nn.Module) -> None:
        self.block = block

    def __call__(self, *args, **kwargs):
        block = self.block
        if not (torch.is_grad_enabled() and block.training):
            return type(block).forward(block, *args, **kwargs)
        leaves, spec = tree_flatten((args, kwargs))
        where = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]
        template = [None if isinstance(leaf, torch.Tensor) else leaf for leaf in leaves]

        def run(*tensors):
            filled = list(template)
            for i, tensor in zip(where, tensors):
                filled[i] = tensor
            inner_args, inner_kwargs = tree_unflatten(filled, spec)
            return type(block).forward(block, *inner_args, **inner_kwargs)

        return checkpoint(run, *(leaves[i] for i in where), use_reentrant=False)


def set_recompute(block: nn.Module, on: bool) -> None:
    """Run `block` under activation recomputation (on) or plainly (off); idempotent."""
    if on and not is_recomputed(block):
        block.forward = RecomputedForward(block)
    elif not on and is_recomputed(block):
        del block.forward


def is_recomputed(block: nn.Module) -> bool:
    return isinstance(block.__dict__.get("forward"), RecomputedForward)
