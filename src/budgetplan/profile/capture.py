"""What one whole forward shows about the blocks, watched by hooks: each block's call (its inputs), its
outputs, and what the model's own code holds live when each block starts and when the head starts.

Captured inputs are detached copies made outside the trackers, so they keep none of the model's memory alive:
a weak reference to each original tells whether the model still holds it at a later moment.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch.utils._python_dispatch import _disable_current_modes
from torch.utils._pytree import tree_flatten, tree_map

from budgetplan.profile.memory import LiveTracker, storage_key


@dataclass(frozen=True)
class BlockCall:
    """A block's captured call: the hidden state is args[0] or kwargs['hidden_states'].

    `names` maps a storage to the name of the shared input it is, common to every block of one forward: two
    different tensors passed under one argument name (Gemma2's sliding-window and full masks, both
    `attention_mask`) get two names, and one tensor passed to several blocks keeps one name.
    """

    args: tuple
    kwargs: dict
    names: dict = field(default_factory=dict, compare=False)

    @property
    def hidden(self) -> torch.Tensor:
        return self.args[0] if self.args and isinstance(self.args[0], torch.Tensor) else self.kwargs["hidden_states"]

    def by_argument(self) -> dict[str, torch.Tensor]:
        """Tensor inputs other than the hidden state, by argument (and position inside it)."""
        named = {f"arg{i}": a for i, a in enumerate(self.args[1:], start=1)}
        named.update({k: v for k, v in self.kwargs.items() if k != "hidden_states"})
        flat = {}
        for name, value in named.items():
            for j, leaf in enumerate(tree_flatten(value)[0]):
                if isinstance(leaf, torch.Tensor):
                    flat[f"{name}.{j}" if not isinstance(value, torch.Tensor) else name] = leaf
        return flat

    def name_inputs(self) -> None:
        """Give each storage among the shared inputs a name in `names` (the argument's, numbered if taken)."""
        taken = set(self.names.values())
        for argument, tensor in self.by_argument().items():
            key = storage_key(tensor)
            if key not in self.names:
                name, n = argument, 1
                while name in taken:
                    n += 1
                    name = f"{argument}#{n}"
                self.names[key] = name
                taken.add(name)
                # A storage freed later may see its address reused by another tensor: that one is not this input.
                weakref.finalize(tensor.untyped_storage(), _forget, self.names, key)

    def shared(self) -> dict[str, torch.Tensor]:
        """Tensor inputs other than the hidden state, by shared-input name (by argument when unnamed)."""
        return {self.names.get(storage_key(t), argument): t for argument, t in self.by_argument().items()}

    def renaming(self, other: BlockCall) -> dict[str, str]:
        """Shared-input names of this call -> the names of the same arguments in `other` (a block of one group)."""
        mine, theirs = self.by_argument(), other.by_argument()
        return {self.names.get(storage_key(t), a): other.names.get(storage_key(theirs[a]), a)
                for a, t in mine.items() if a in theirs}

    def detached_copy(self, copies: dict[int, torch.Tensor]) -> BlockCall:
        """The call with detached copies of its tensors: the model's own are freed when the model frees them.

        `copies` (original storage -> copy) is shared by the calls of one forward, so an input every block gets
        is copied once and keeps one storage, and `names` are carried over to the copies.
        """
        def copy(value):
            if not isinstance(value, torch.Tensor):
                return value
            key = storage_key(value)
            if value is self.hidden or key not in self.names:
                return value.detach().clone()
            if key not in copies:
                copies[key] = value.detach().clone()
                self.names[storage_key(copies[key])] = self.names[key]
            return copies[key]
        return BlockCall(tree_map(copy, self.args), tree_map(copy, self.kwargs), self.names)

    def with_hidden(self, hidden: torch.Tensor) -> tuple[tuple, dict]:
        detach = lambda v: v.detach() if isinstance(v, torch.Tensor) else v  # noqa: E731
        args, kwargs = tree_map(detach, self.args), tree_map(detach, self.kwargs)
        if self.args and isinstance(self.args[0], torch.Tensor):
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}


def _forget(names: dict[int, str], key: int) -> None:
    """Drop a freed storage's address from `names`, keeping its name taken (under a key no address has): a later
    tensor is another input even if it is passed under the same argument and both are kept for backward."""
    if key in names:
        name = names.pop(key)
        names[min(0, *names) - 1] = name


def first_tensor(output) -> torch.Tensor:
    return output if isinstance(output, torch.Tensor) else next(t for t in tree_flatten(output)[0]
                                                                   if isinstance(t, torch.Tensor))


@dataclass(frozen=True)
class HeldAtEntry:
    """What the model's own code keeps live when a block (or the head) starts, besides its input (frozen model)."""

    hidden: tuple[int, ...]  # earlier block inputs still alive (0 = the embeddings' output)
    shared: dict[str, int]  # shared inputs (masks, rotary tables, T5's position bias) by name -> bytes
    other_bytes: int  # anything else the caller holds (e.g. GPT-2's token and position embeddings)
    previous_outputs: bool = False  # the previous block's outputs besides its hidden state (attention probs)


def _alive(refs) -> list[int]:
    return [j for j, ref in enumerate(refs) if ref() is not None]


class BlockWatch:
    """Hooks on the blocks for one forward. `calls`, `held` (one per block, then one at the head's start),
    `outputs` (cloned, when `record_outputs`), `extra_leaves` (per block, the positions in its output of the
    tensors besides the hidden state that are not inputs of later blocks), `counts` (calls per block)."""

    def __init__(self, blocks, tracker: LiveTracker, record_outputs: bool,
                 on_first: Callable[[BlockCall], None]) -> None:
        self.blocks, self.tracker, self.record_outputs, self.on_first = blocks, tracker, record_outputs, on_first
        n = len(blocks)
        self.calls: list[BlockCall] = []
        self.held: list[HeldAtEntry] = []
        self.outputs: list = []
        self.counts = [0] * n
        self.extra_leaves: list[tuple[int, ...]] = [()] * n
        self.start = 0
        self._names: dict[int, str] = {}
        self._copies: dict[int, torch.Tensor] = {}
        self._inputs: list[weakref.ref] = []  # each block's hidden input
        self._shared: dict[str, weakref.ref] = {}
        self._extras: dict[int, list[tuple[int, weakref.ref]]] = {}
        self._last_output: torch.Tensor | None = None
        self._handles: list = []

    def __enter__(self) -> BlockWatch:
        for i, block in enumerate(self.blocks):
            self._handles.append(block.register_forward_pre_hook(self._entering(i), with_kwargs=True))
            self._handles.append(block.register_forward_hook(self._leaving(i), with_kwargs=True))
        self._handles.append(torch.nn.modules.module.register_module_forward_pre_hook(self._head_starts))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()

    def _live(self) -> int:
        return self.tracker.live_bytes - self.start

    def _entering(self, index: int):
        def hook(module, args, kwargs):
            self.counts[index] += 1
            call = BlockCall(args, kwargs, self._names)
            call.name_inputs()
            previous = self._previous_outputs(index - 1)
            hidden = _alive(self._inputs)
            shared = {name: t.untyped_storage().nbytes() for name, t in call.shared().items()}
            accounted = call.hidden.untyped_storage().nbytes() + self._bytes(hidden) + sum(shared.values())
            self.held.append(HeldAtEntry(tuple(hidden), shared, max(0, self._live() - accounted - previous),
                                         previous > 0))
            if not self.calls:
                self.on_first(call)
            self._inputs.append(weakref.ref(call.hidden.untyped_storage()))
            self._shared.update({n: weakref.ref(t.untyped_storage()) for n, t in call.shared().items()})
            with _disable_current_modes():  # our copies are not the model's memory
                self.calls.append(call.detached_copy(self._copies))
        return hook

    def _leaving(self, index: int):
        def hook(module, args, kwargs, output):
            hidden = first_tensor(output)
            leaves = tree_flatten(output)[0]
            self._extras[index] = [(i, weakref.ref(t.untyped_storage())) for i, t in enumerate(leaves)
                                   if isinstance(t, torch.Tensor) and t.numel() and t is not hidden
                                   and storage_key(t) != storage_key(hidden)]
            if self.record_outputs:
                with _disable_current_modes():
                    self.outputs.append(tree_map(lambda v: v.detach().clone() if isinstance(v, torch.Tensor)
                                                 else v, output))
            if index == len(self.blocks) - 1:
                self._last_output = hidden
        return hook

    def _head_starts(self, module, args) -> None:
        """The first module called after the last block returned: what the model holds as the head starts."""
        if self._last_output is None:
            return
        hidden, self._last_output = self._last_output, None
        previous = self._previous_outputs(len(self.blocks) - 1)
        earlier = _alive(self._inputs)
        shared = {name: ref().nbytes() for name, ref in self._shared.items() if ref() is not None}
        accounted = hidden.untyped_storage().nbytes() + self._bytes(earlier) + sum(shared.values())
        self.held.append(HeldAtEntry(tuple(earlier), shared, max(0, self._live() - accounted - previous),
                                     previous > 0))

    def _bytes(self, indices: list[int]) -> int:
        return sum(self._inputs[j]().nbytes() for j in indices)

    def _previous_outputs(self, index: int) -> int:
        """Bytes of block `index`'s outputs besides the hidden state that are alive and no later block's input;
        records their positions in its output."""
        if index < 0:
            return 0
        plain = [(i, ref()) for i, ref in self._extras.get(index, []) if ref() is not None]
        plain = [(i, s) for i, s in plain if s.data_ptr() not in self._names]
        self.extra_leaves[index] = tuple(i for i, _ in plain)
        return sum(s.nbytes() for _, s in plain)


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
