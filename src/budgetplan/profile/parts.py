"""Measure each part once per state and boundary.

pre   one forward of the whole model, attributed to pre until the first block starts; it also captures every
      block's inputs (hidden state and shared inputs such as masks) for the block runs.
block the block alone on its captured inputs, its input requiring grad or not (the boundary); backward is
      driven by a gradient of ones on its output, exactly the work autograd does inside a whole model.
post  the whole model with the last block's output detached (requiring grad or not), so backward stops there.
Forward/backward FLOPs are read from the counter between phases; extras are peaks above the phase start.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from budgetplan.errors import ProfileError
from budgetplan.models.load import LoadedModel
from budgetplan.profile.capture import BlockCall, BlockWatch, HeldAtEntry, first_tensor, stubbed_blocks
from budgetplan.profile.flops import OpCounter
from budgetplan.profile.measure import check_gradients, measure_optimizer
from budgetplan.profile.quantize import quantized_buffers
from budgetplan.profile.memory import LiveTracker, SavedTensors, storage_bytes, storage_key
from budgetplan.profile.types import INPUT_GRAD, MEASURED, PartCost


@dataclass
class _Phase:
    """Counters of one measured phase."""

    tracker: LiveTracker
    counter: OpCounter
    saved: SavedTensors


def _new_phase(module: nn.Module, resident: list[torch.Tensor]) -> _Phase:
    tracker = LiveTracker()
    tracker.track([*module.parameters(), *module.buffers(), *resident])
    return _Phase(tracker, OpCounter(), SavedTensors(module.parameters()))


def _saved_split(saved: SavedTensors, label: str, inputs: set[int], outputs: set[int],
                 shared: dict[str, torch.Tensor]) -> tuple[int, bool, bool, dict[str, int]]:
    """Split one label's saved storages into internal bytes, boundary flags and shared inputs."""
    shared_keys = {storage_key(t): name for name, t in shared.items()}
    internal, saves_in, saves_out, shared_bytes = 0, False, False, {}
    for key, (nbytes, who) in saved.saved.items():
        if who != label:
            continue
        if key in inputs:
            saves_in = True
        elif key in outputs:
            saves_out = True
        elif key in shared_keys:
            shared_bytes[shared_keys[key]] = nbytes
        else:
            internal += nbytes
    return internal, saves_in, saves_out, shared_bytes


def _cost(params: list[nn.Parameter], flops: tuple[int, int], saved: tuple, extras: tuple[int, int],
          optimizer: tuple[int, int], uncounted: dict[str, int], held: tuple = ()) -> PartCost:
    """held: weights at rest that are not parameters (int8 weights and scales), counted in param_bytes."""
    trainable = [p for p in params if p.requires_grad]
    internal, saves_in, saves_out, shared = saved
    return PartCost(
        flops_forward=flops[0], flops_backward=flops[1], activation_bytes=internal, saves_input=saves_in,
        saves_output=saves_out, shared_saved_bytes=shared, forward_extra_bytes=extras[0],
        backward_extra_bytes=extras[1], step_extra_bytes=optimizer[1], param_bytes=storage_bytes([*params, *held]),
        trainable_params=sum(p.numel() for p in trainable), trainable_bytes=storage_bytes(trainable),
        optimizer_state_bytes=optimizer[0], uncounted_ops=uncounted, source=MEASURED,
    )


def _backward(phase: _Phase, outputs: torch.Tensor, grads: torch.Tensor | None) -> tuple[int, int]:
    """(backward FLOPs, peak bytes above the backward's start)."""
    before = phase.counter.flops
    start = phase.tracker.reset_peak()
    torch.autograd.backward(outputs, grads)
    return phase.counter.flops - before, phase.tracker.peak_bytes - start


def measure_block(block: nn.Module, call: BlockCall, boundary: str, optimizer: str,
                  extra_leaves: tuple[int, ...] = ()) -> PartCost:
    """One block alone, in whatever state its parameters are set to, under `boundary`.

    `extra_leaves`: positions in the block's output of the tensors besides the hidden state that the model
    holds after the block returns; those the block does not keep for backward are its output_extra_bytes.
    """
    block.train()
    hidden = call.hidden.detach().clone().requires_grad_(boundary == INPUT_GRAD)
    args, kwargs = call.with_hidden(hidden)
    shared = call.shared()
    phase = _new_phase(block, [hidden, *shared.values()])
    with phase.tracker:
        with phase.counter:
            start = phase.tracker.reset_peak()
            with phase.saved:
                output = block(*args, **kwargs)
            out, extras = first_tensor(output), _unsaved(output, extra_leaves, phase.saved)
            del output
            flops_fwd, fwd_extra = phase.counter.flops, phase.tracker.peak_bytes - start
            flops_bwd = bwd_extra = 0
            if out.requires_grad:
                flops_bwd, bwd_extra = _backward(phase, out, torch.ones_like(out))
        check_gradients(block.named_parameters(), "the block")
        saved = _saved_split(phase.saved, "", {storage_key(hidden)}, {storage_key(out)}, shared)
        del out
        opt = measure_optimizer(list(block.parameters()), optimizer, phase.tracker)
    cost = _cost(list(block.parameters()), (flops_fwd, flops_bwd), saved, (fwd_extra, bwd_extra), opt,
                 dict(phase.counter.uncounted), held=tuple(quantized_buffers(block)))
    block.zero_grad(set_to_none=True)
    return replace(cost, output_extra_bytes=extras)


def _unsaved(output, leaves: tuple[int, ...], saved: SavedTensors) -> int:
    """Bytes of the output tensors at `leaves` that autograd does not keep for backward."""
    flat = tree_flatten(output)[0]
    tensors = [flat[i] for i in leaves if i < len(flat) and isinstance(flat[i], torch.Tensor)]
    return storage_bytes(t for t in tensors if storage_key(t) not in saved.saved)


def _set_trainable(model: nn.Module, names: set[str]) -> list[nn.Parameter]:
    for name, param in model.named_parameters():
        param.requires_grad_(name in names)
    return [p for n, p in model.named_parameters() if n in names]


@dataclass(frozen=True)
class PreRun:
    """What the first (full) forward records besides the pre part's cost."""

    calls: list[BlockCall]  # each block's inputs (hidden state cloned)
    held: tuple[HeldAtEntry, ...]
    outputs: list  # each block's output (cloned): later runs replace the blocks by these (stubbed_blocks)
    extra_leaves: tuple[tuple[int, ...], ...] = ()  # per block, its outputs the model holds besides the hidden


def measure_pre(loaded: LoadedModel, batch: dict, optimizer: str, pre_names: tuple[str, ...],
                train: bool, outputs: list | None = None) -> tuple[PartCost, PreRun]:
    """Everything before the first block.

    Also records each block's captured call (copied, so that our copy keeps nothing alive) and output, and per
    block (and at the head's start) what the model's own code still holds (BERT keeps the embedding output for
    the whole encoder, GPT-Neo the previous block's attention probabilities): those are live in the forward
    whatever the configuration. With `outputs` (from an earlier run) the blocks are skipped: pre ends where
    they start.
    """
    model = loaded.model.train()
    _set_trainable(model, set(pre_names) if train else set())
    params = [p for n, p in model.named_parameters() if n in set(pre_names)]
    phase = _new_phase(model, list(batch.values()))
    mark: dict = {}

    def first(call: BlockCall) -> None:
        if not train and call.hidden.requires_grad:
            raise ProfileError("the first block's input requires a gradient while everything before the blocks is "
                               "frozen (the model makes its input require grad, so backward runs through the "
                               "frozen embeddings); budgetplan cannot compose that: stop it in the model (e.g. "
                               "freeze_feature_encoder()) and profile again")
        # Hold the embeddings' output only when its backward is measured: a reference would mark it held.
        mark.update(flops=phase.counter.flops, peak=phase.tracker.peak_bytes, h0=call.hidden if train else None,
                    h0_key=storage_key(call.hidden), uncounted=dict(phase.counter.uncounted))
        phase.saved.label = "later"

    watch = BlockWatch(loaded.blocks, phase.tracker, outputs is None, first)
    with watch, phase.tracker, phase.counter, stubbed_blocks(loaded.blocks, outputs):
        start = watch.start = phase.tracker.reset_peak()
        phase.saved.label = "pre"
        with phase.saved:
            model(batch)
        flops_bwd, bwd_extra, h0_key = _pre_backward(phase, mark, train)
        check_gradients(((n, p) for n, p in model.named_parameters() if n in set(pre_names)), "the embeddings")
        saved = _saved_split(phase.saved, "pre", set(), {h0_key}, watch.calls[0].shared())
        opt = measure_optimizer(params, optimizer, phase.tracker)
    _check_single_invocation(loaded, watch.counts)
    cost = _cost(params, (mark["flops"], flops_bwd), saved, (mark["peak"] - start, bwd_extra), opt, mark["uncounted"],
                 held=tuple(quantized_buffers(model)))  # int8 embedding tables (the blocks are never int8 here)
    model.zero_grad(set_to_none=True)
    return cost, PreRun(watch.calls, tuple(watch.held), watch.outputs, tuple(watch.extra_leaves))


def _check_single_invocation(loaded: LoadedModel, counts: list[int]) -> None:
    for index, count in enumerate(counts):
        if count == 0:
            raise ProfileError(f"block {index} of '{loaded.layout.path}' never runs in a forward; point --blocks "
                               "at the stack of blocks the model runs")
        if count > 1:
            raise ProfileError(
                f"block {index} of '{loaded.layout.path}' runs {count} times in one forward (weights shared "
                "across layers, as in ALBERT, or a loop over one block); budgetplan gives each block one state "
                "and would count it once: use a model whose layers each have their own weights")


def _pre_backward(phase: _Phase, mark: dict, train: bool) -> tuple[int, int, int]:
    """Backward of the embeddings from a gradient of ones on their output (only when they are trained)."""
    h0 = mark.pop("h0")
    if not train:
        return 0, 0, mark["h0_key"]
    flops, extra = _backward(phase, h0, torch.ones_like(h0))
    return flops, extra, mark["h0_key"]


def measure_post(loaded: LoadedModel, batch: dict, optimizer: str, post_names: tuple[str, ...],
                 boundary: str, outputs: list | None = None) -> PartCost:
    """Everything after the last block (head and loss), with its input requiring grad or not.

    With `outputs` (recorded by measure_pre) the blocks are skipped and return their recorded outputs.
    """
    model = loaded.model.train()
    params = _set_trainable(model, set(post_names))
    phase = _new_phase(model, list(batch.values()))
    mark: dict = {}

    def cut(module, args, output):
        out = first_tensor(output)
        hidden = out.detach().requires_grad_(boundary == INPUT_GRAD)
        mark.update(flops=phase.counter.flops, live=phase.tracker.reset_peak(), hidden=hidden,
                    uncounted=dict(phase.counter.uncounted))
        phase.saved.label = "post"
        return hidden if isinstance(output, torch.Tensor) else (hidden, *output[1:])

    handle = loaded.blocks[-1].register_forward_hook(cut)
    try:
        with phase.tracker:
            with phase.counter, stubbed_blocks(loaded.blocks, outputs):
                phase.saved.label = "before"
                with phase.saved:
                    loss = model(batch)
                flops_fwd, fwd_extra = phase.counter.flops - mark["flops"], phase.tracker.peak_bytes - mark["live"]
                flops_bwd, bwd_extra = _backward(phase, loss, None)
            check_gradients(((n, p) for n, p in model.named_parameters() if n in set(post_names)), "the head")
            saved = _saved_split(phase.saved, "post", {storage_key(mark["hidden"])}, set(), {})
            del loss
            opt = measure_optimizer(params, optimizer, phase.tracker)
    finally:
        handle.remove()
    uncounted = {k: v - mark["uncounted"].get(k, 0) for k, v in phase.counter.uncounted.items()
                 if v > mark["uncounted"].get(k, 0)}
    cost = _cost(params, (flops_fwd, flops_bwd), saved, (fwd_extra, bwd_extra), opt, uncounted)
    model.zero_grad(set_to_none=True)
    return cost
