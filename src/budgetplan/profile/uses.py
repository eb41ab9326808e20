"""Which part each parameter belongs to, by where the model uses it, not by where it is registered.

One small forward (1 x 4 tokens) is watched at the dispatcher: a parameter belongs to the part that is running
when an op first reads it ("pre" before the first block starts, "post" after the last block returns). So
T5's `shared` table, registered outside the encoder but read by `encoder.embed_tokens`, is the embeddings, and
DeBERTa's `rel_embeddings`, read functionally (no module call) before the blocks, is "pre" too.

A *side route* is a parameter whose value reaches a block other than through the hidden state: it is read
into a tensor that later blocks receive as an extra input (DeBERTa's relative embeddings, MPNet's relative
attention bias, T5's position bias computed by block 0 and passed to every later block). Its gradient would
come from every block at once, which a per-part composition cannot describe, so a side-route parameter is
never trained in any configuration (it stays as loaded, like a frozen embedding); what it produces is measured
as an input every block shares.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from budgetplan.models.load import LoadedModel
from budgetplan.profile.batch import make_batch
from budgetplan.profile.memory import storage_key

PRE, BLOCKS, POST = "pre", "blocks", "post"


@dataclass(frozen=True)
class ParameterUse:
    """Per parameter name (task-model names, LoRA adapters excluded): the phase that first reads it."""

    phase: dict[str, str]
    side_routes: tuple[str, ...]  # never trained: their values reach blocks by a tensor other than the hidden state
    modules_run: dict[str, int]  # module name -> order of its first call (modules that run as modules)


class _Reads(TorchDispatchMode):
    """Records, per parameter storage, the phase in which an op first reads it."""

    def __init__(self, names: dict[int, str]) -> None:
        super().__init__()
        self.names, self.phase, self.first = names, PRE, {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        for leaf in tree_flatten((args, kwargs or {}))[0]:
            if isinstance(leaf, torch.Tensor) and leaf.numel():
                name = self.names.get(storage_key(leaf))
                if name is not None:
                    self.first.setdefault(name, self.phase)
        return func(*args, **(kwargs or {}))


def parameter_use(loaded: LoadedModel) -> ParameterUse:
    """Run one small forward with every parameter requiring grad and read off phases and side routes."""
    model = loaded.model
    params = {n: p for n, p in model.named_parameters() if "lora_" not in n}
    reads = _Reads({storage_key(p): n for n, p in params.items()})
    modules_run: dict[str, int] = {}
    shared: list[torch.Tensor] = []

    def enter(name):
        def hook(module, args, kwargs):
            modules_run.setdefault(name, len(modules_run))
            if module is loaded.blocks[0]:
                reads.phase = BLOCKS
            if any(module is b for b in loaded.blocks[1:]):
                shared.extend(t for t in _extra_inputs(args, kwargs) if t.requires_grad)
        return hook

    def leave(module, args, output):
        reads.phase = POST

    handles = [m.register_forward_pre_hook(enter(n), with_kwargs=True) for n, m in model.named_modules()]
    handles.append(loaded.blocks[-1].register_forward_hook(leave))
    was_training = model.training
    try:
        with _all_trainable(params), torch.enable_grad(), one_thread():
            with reads:
                model.train()(make_batch(loaded, batch_size=1, seq_len=4))
            side = _side_routes(shared, params)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return ParameterUse(reads.first, side, modules_run)


def _extra_inputs(args, kwargs) -> list[torch.Tensor]:
    """A block's tensor inputs other than its hidden state (args[0], or kwargs["hidden_states"])."""
    rest = {k: v for k, v in kwargs.items() if k != "hidden_states"}
    return [t for t in tree_flatten((args[1:], rest))[0] if isinstance(t, torch.Tensor)]


def _side_routes(shared: list[torch.Tensor], params: dict[str, torch.nn.Parameter]) -> tuple[str, ...]:
    """Parameters that the extra inputs of blocks after the first depend on."""
    if not shared:
        return ()
    names = list(params)
    grads = torch.autograd.grad([t.float().sum() for t in shared], [params[n] for n in names], allow_unused=True)
    return tuple(n for n, g in zip(names, grads) if g is not None)


@contextmanager
def _all_trainable(params: dict) -> Iterator[None]:
    """Every floating-point parameter requires grad inside, as it did before after."""
    before = {n: p.requires_grad for n, p in params.items()}
    for p in params.values():
        p.requires_grad_(p.is_floating_point())
    try:
        yield
    finally:
        for n, p in params.items():
            p.requires_grad_(before[n])


@contextmanager
def one_thread() -> Iterator[None]:
    """Run tiny ops on one intra-op thread: two OpenMP threads spin and wait on each other for every small
    matmul, which on a busy machine made this 4-token forward take 0.6-1.8 s instead of 0.03-0.05 s."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
