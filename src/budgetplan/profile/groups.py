"""Which blocks do identical work: same module type and structure, parameter shapes, dtypes and trainability,
buffers, plain attributes (number of heads, dropout rate, ...), and inputs of the same shapes and dtypes
(with the same non-tensor arguments). Attributes that only number the layer (layer_idx) are left out.

Such blocks run the same ops on same-shaped tensors, so their FLOPs, saved tensors and peaks are equal;
the profiler measures the first of each group and gives its costs to the rest.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

PLAIN = (int, float, bool, str, type(None))
INDEX_NAMES = ("idx", "index", "layer_id", "layer_number", "layer_num")


def _numbers_the_layer(name: str) -> bool:
    return name.lstrip("_").endswith(INDEX_NAMES)


def _attributes(block: nn.Module) -> tuple:
    return tuple((path, key, repr(value)) for path, module in block.named_modules()
                 for key, value in sorted(vars(module).items())
                 if isinstance(value, PLAIN) and key != "training" and not _numbers_the_layer(key))


def _describe(value) -> tuple:
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), str(value.dtype), value.requires_grad, value.layout)
    if isinstance(value, PLAIN):
        return ("value", repr(value))
    return ("object", type(value).__qualname__)


def block_signature(block: nn.Module, call=None) -> tuple:
    """Everything a block's measured cost depends on; `call` (a BlockCall) adds its inputs."""
    params = tuple((n, tuple(p.shape), str(p.dtype), p.requires_grad) for n, p in block.named_parameters())
    buffers = tuple((n, tuple(b.shape), str(b.dtype)) for n, b in block.named_buffers())
    inputs: tuple = ()
    if call is not None:
        leaves, spec = tree_flatten((call.args, call.kwargs))
        inputs = (str(spec), *(_describe(leaf) for leaf in leaves))
    return (type(block).__qualname__, repr(block), _attributes(block), params, buffers, inputs)


def block_groups(blocks, calls=None, share: bool = True) -> list[int]:
    """For each block, the index of the first block with the same signature (itself when share is False)."""
    if not share:
        return list(range(len(blocks)))
    first: dict[tuple, int] = {}
    return [first.setdefault(block_signature(block, calls[i] if calls else None), i)
            for i, block in enumerate(blocks)]
