"""Measure each part once per state and boundary.

pre   one forward of the whole model, attributed to pre until the first block starts; it also captures every
      block's inputs (hidden state and shared inputs such as masks) for the block runs.
block the block alone on its captured inputs, its input requiring grad or not (the boundary); backward is
      driven by a gradient of ones on its output, exactly the work autograd does inside a whole model.
post  the whole model with the last block's output detached (requiring grad or not), so backward stops there.
Forward/backward FLOPs are read from the counter between phases; extras are peaks above the phase start.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import _disable_current_modes
from torch.utils._pytree import tree_flatten, tree_map

from budgetplan.errors import ProfileError
from budgetplan.models.load import LoadedModel
from budgetplan.profile.flops import OpCounter
from budgetplan.profile.measure import check_gradients, measure_optimizer
from budgetplan.profile.quantize import quantized_buffers
from budgetplan.profile.memory import LiveTracker, SavedTensors, storage_bytes, storage_key
from budgetplan.profile.types import INPUT_GRAD, MEASURED, PartCost


@dataclass(frozen=True)
class BlockCall:
    """A block's captured call: the hidden state is args[0] or kwargs['hidden_states']."""

    args: tuple
    kwargs: dict

    @property
    def hidden(self) -> torch.Tensor:
        return self.args[0] if self.args and isinstance(self.args[0], torch.Tensor) else self.kwargs["hidden_states"]

    def shared(self) -> dict[str, torch.Tensor]:
        """Tensor inputs other than the hidden state, by name (shared by every block)."""
        named = {f"arg{i}": a for i, a in enumerate(self.args[1:], start=1)}
        named.update({k: v for k, v in self.kwargs.items() if k != "hidden_states"})
        flat = {}
        for name, value in named.items():
            for j, leaf in enumerate(tree_flatten(value)[0]):
                if isinstance(leaf, torch.Tensor):
                    flat[f"{name}.{j}" if not isinstance(value, torch.Tensor) else name] = leaf
        return flat

    def with_hidden_clone(self) -> BlockCall:
        """The same call with a detached copy of the hidden state (other inputs kept as they are)."""
        args, kwargs = self.with_hidden(self.hidden.detach().clone())
        return BlockCall(args, kwargs)

    def with_hidden(self, hidden: torch.Tensor) -> tuple[tuple, dict]:
        detach = lambda v: v.detach() if isinstance(v, torch.Tensor) else v  # noqa: E731
        args, kwargs = tree_map(detach, self.args), tree_map(detach, self.kwargs)
        if self.args and isinstance(self.args[0], torch.Tensor):
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}


def first_tensor(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else next(t for t in tree_flatten(output)[0]
                                                                   if isinstance(t, torch.Tensor))


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


def measure_block(block: nn.Module, call: BlockCall, boundary: str, optimizer: str) -> PartCost:
    """One block alone, in whatever state its parameters are set to, under `boundary`."""
    block.train()
    hidden = call.hidden.detach().clone().requires_grad_(boundary == INPUT_GRAD)
    args, kwargs = call.with_hidden(hidden)
    shared = call.shared()
    phase = _new_phase(block, [hidden, *shared.values()])
    with phase.tracker:
        with phase.counter:
            start = phase.tracker.reset_peak()
            with phase.saved:
                out = first_tensor(block(*args, **kwargs))
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
    return cost


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


def measure_pre(loaded: LoadedModel, batch: dict, optimizer: str, pre_names: tuple[str, ...],
                train: bool, outputs: list | None = None) -> tuple[PartCost, PreRun]:
    """Everything before the first block.

    Also records each block's captured call (hidden state cloned, so that our copy keeps nothing alive) and
    output, and per block the earlier hidden states the model's own code still holds when the block starts
    (BERT keeps the embedding output for the whole encoder): those are live in the forward whatever the
    configuration. With `outputs` (from an earlier run) the blocks are skipped: pre ends where they start.
    """
    model = loaded.model.train()
    _set_trainable(model, set(pre_names) if train else set())
    params = [p for n, p in model.named_parameters() if n in set(pre_names)]
    phase = _new_phase(model, list(batch.values()))
    run = PreRun([], (), [])
    alive_refs: list[weakref.ref] = []
    held: list[HeldAtEntry] = []
    mark: dict = {}
    counts = [0] * loaded.layout.num_blocks

    def capture(index):
        def hook(module, args, kwargs):
            counts[index] += 1
            call = BlockCall(args, kwargs)
            held.append(_held_at_entry(call, alive_refs, phase.tracker.live_bytes - mark.get("start", 0)))
            if not run.calls:
                # Hold the embeddings' output only when its backward is measured: a reference would mark it held.
                mark.update(flops=phase.counter.flops, peak=phase.tracker.peak_bytes,
                            h0=call.hidden if train else None, h0_key=storage_key(call.hidden),
                            uncounted=dict(phase.counter.uncounted))
                phase.saved.label = "later"
            alive_refs.append(weakref.ref(call.hidden.untyped_storage()))
            with _disable_current_modes():  # our copy is not the model's memory
                run.calls.append(call.with_hidden_clone())
        return hook

    def record(module, args, kwargs, output):
        with _disable_current_modes():
            run.outputs.append(tree_map(lambda v: v.detach().clone() if isinstance(v, torch.Tensor) else v, output))

    handles = [b.register_forward_pre_hook(capture(i), with_kwargs=True) for i, b in enumerate(loaded.blocks)]
    if outputs is None:
        handles += [b.register_forward_hook(record, with_kwargs=True) for b in loaded.blocks]
    try:
        with phase.tracker, phase.counter, stubbed_blocks(loaded.blocks, outputs):
            start = mark["start"] = phase.tracker.reset_peak()
            phase.saved.label = "pre"
            with phase.saved:
                model(batch)
            flops_bwd, bwd_extra, h0_key = _pre_backward(phase, mark, train)
            check_gradients(((n, p) for n, p in model.named_parameters() if n in set(pre_names)), "the embeddings")
            saved = _saved_split(phase.saved, "pre", set(), {h0_key}, run.calls[0].shared())
            opt = measure_optimizer(params, optimizer, phase.tracker)
    finally:
        for handle in handles:
            handle.remove()
    _check_single_invocation(loaded, counts)
    cost = _cost(params, (mark["flops"], flops_bwd), saved, (mark["peak"] - start, bwd_extra), opt, mark["uncounted"],
                 held=tuple(quantized_buffers(model)))  # int8 embedding tables (the blocks are never int8 here)
    model.zero_grad(set_to_none=True)
    return cost, PreRun(run.calls, tuple(held), run.outputs)


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


@contextmanager
def stubbed_blocks(blocks, outputs: list | None) -> Iterator[None]:
    """Each block returns its recorded output instead of computing: the rest of the model runs unchanged.

    Hooks still fire (they are called around forward), so parts before and after the blocks are measured
    exactly as in a full forward, without paying for the blocks.
    """
    if outputs is None:
        yield
        return
    saved = [block.__dict__.get("forward") for block in blocks]
    for block, output in zip(blocks, outputs):
        block.forward = lambda *args, _output=output, **kwargs: _output
    try:
        yield
    finally:
        for block, forward in zip(blocks, saved):
            del block.forward
            if forward is not None:
                block.forward = forward


@dataclass(frozen=True)
class HeldAtEntry:
    """What the model's own code keeps live when a block starts, besides the block's input (frozen model)."""

    hidden: tuple[int, ...]  # earlier block inputs still alive (0 = the embeddings' output)
    shared: dict[str, int]  # shared inputs (masks, rotary tables) by name -> bytes
    other_bytes: int  # anything else the caller holds (e.g. GPT-2's token and position embeddings)


def _held_at_entry(call: BlockCall, alive_refs: list, live_above_start: int) -> HeldAtEntry:
    hidden = tuple(j for j, ref in enumerate(alive_refs) if ref() is not None)
    hidden_bytes = call.hidden.untyped_storage().nbytes()
    shared = {name: t.untyped_storage().nbytes() for name, t in call.shared().items()}
    accounted = hidden_bytes * (1 + len(hidden)) + storage_bytes(call.shared().values())
    return HeldAtEntry(hidden, shared, max(0, live_above_start - accounted))


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
