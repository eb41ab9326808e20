"""Frozen linear weights held in int8: the "+int8" block states.

A quantised layer keeps its weight as int8 with one scale per output channel (symmetric, absmax / 127), both as
buffers, and its bias as a frozen parameter. Its forward dequantises the weight (int8 -> the activations'
dtype, times the channel scales), runs the linear and drops the full-precision copy; its backward to the input
dequantises again. Nothing is saved for backward (the layer itself, not a tensor, is kept on the autograd
context), so only one layer's full-precision weight is alive at any moment, in the forward and in the backward.

Counting convention (profile/flops.py counts what runs): a dequantisation is one multiply per weight element
(aten.mul, 1 FLOP per element; the int8 -> float conversion is a copy and costs 0), once per forward and once
more per backward that needs the input gradient. The matmuls are those of the full-precision layer.

Frozen embedding tables (the "pre" part, when the embeddings are not trained) may be held in int8 too, one scale
per row (QuantizedEmbedding): a lookup dequantises only the gathered rows, one multiply per gathered element.

Only frozen weights are quantised: a LoRA layer's base (peft keeps it as `base_layer`) is replaced, its
adapters stay full precision and train as before. Which layers: the block's linears that run as modules
(profile.configure.lora_targets), so a block with no such linear has no +int8 states.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

INT8_MAX = 127


class _DequantLinear(torch.autograd.Function):
    """y = x W^T + b with W dequantised on the fly; backward gives the input gradient only (W and b are frozen)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, layer: "QuantizedLinear") -> torch.Tensor:
        ctx.layer = layer  # the module, not its tensors: nothing is saved for backward
        return F.linear(x, layer.dequantized(x.dtype), layer.bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        weight = ctx.layer.dequantized(grad.dtype)
        return grad @ weight, None


class QuantizedLinear(nn.Module):
    """A frozen linear layer whose weight is held in int8 with a scale per output channel."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: nn.Parameter | None) -> None:
        super().__init__()
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale)
        self.bias = bias
        if bias is not None:
            bias.requires_grad_(False)
        self.in_features, self.out_features = qweight.shape[1], qweight.shape[0]

    @property
    def weight(self) -> torch.Tensor:
        """The int8 weight itself, as bitsandbytes' int8 layers expose it: model code that reads a linear's
        `weight.dtype` to cast its input (T5's feed-forward) sees int8 and leaves the input as it is."""
        return self.qweight

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        return self.qweight.to(dtype) * self.scale.to(dtype)[:, None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _DequantLinear.apply(x, self)
        return F.linear(x, self.dequantized(x.dtype), self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weight=int8 per-channel"


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weight, per-row scale) of an (out, in) weight: symmetric, scale = max |row| / 127."""
    w = weight.detach()
    scale = w.abs().amax(dim=1).clamp_min(torch.finfo(w.dtype).tiny) / INT8_MAX
    q = torch.round(w / scale[:, None]).clamp_(-INT8_MAX, INT8_MAX).to(torch.int8)
    return q, scale


def quantized_from(layer: nn.Module) -> QuantizedLinear:
    """The int8 copy of an nn.Linear or a transformers Conv1D (weight stored (in, out), transposed here)."""
    weight = layer.weight.t() if type(layer).__name__ == "Conv1D" else layer.weight
    q, scale = quantize_weight(weight)
    return QuantizedLinear(q.contiguous(), scale, layer.bias)


def quantize_block(block: nn.Module, targets: tuple[str, ...]) -> int:
    """Replace each target linear of `block` (names relative to it) by its int8 copy, in place; a peft LoRA
    layer keeps its adapters and gets an int8 base. Returns the layers quantised (already quantised ones count
    too: idempotent)."""
    done = 0
    for name in targets:
        try:
            module = block.get_submodule(name)
        except AttributeError:  # a target of the first block this one lacks (Swin's last stage: no downsample)
            continue
        owner, attr = (module, "base_layer") if hasattr(module, "base_layer") else _parent(block, name)
        layer = getattr(owner, attr)
        if not isinstance(layer, QuantizedLinear):
            setattr(owner, attr, quantized_from(layer))
        done += 1
    return done


def _parent(block: nn.Module, name: str) -> tuple[nn.Module, str]:
    parent, _, child = name.rpartition(".")
    return (block.get_submodule(parent) if parent else block), child


def quantized_buffers(module: nn.Module) -> list[torch.Tensor]:
    """The int8 weights and scales held by the quantised layers and tables inside `module` (weights at rest)."""
    return [t for m in module.modules() if isinstance(m, (QuantizedLinear, QuantizedEmbedding))
            for t in (m.qweight, m.scale)]


class QuantizedEmbedding(nn.Module):
    """A frozen embedding table held in int8 with a scale per row; a lookup dequantises only the rows it gathers
    (one multiply per gathered element), never the whole table."""

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, padding_idx: int | None) -> None:
        super().__init__()
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale)
        self.padding_idx = padding_idx
        self.num_embeddings, self.embedding_dim = qweight.shape

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.qweight[ids].to(self.scale.dtype) * self.scale[ids].unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, weight=int8 per-row"


def quantizable_embeddings(model: nn.Module, names: tuple[str, ...]) -> tuple[str, ...]:
    """Module names of the plain nn.Embedding layers whose weight is among `names` (frozen parameter names) and
    is used by no other module (a table tied to an output head stays full precision)."""
    uses: dict[int, int] = {}
    for _, param in model.named_parameters(remove_duplicate=False):
        uses[id(param)] = uses.get(id(param), 0) + 1
    wanted = set(names)
    return tuple(name for name, m in model.named_modules()
                 if type(m) is nn.Embedding and f"{name}.weight" in wanted and uses[id(m.weight)] == 1
                 and m.max_norm is None and not m.sparse)


def quantize_embeddings(model: nn.Module, modules: tuple[str, ...]) -> None:
    """Replace each named nn.Embedding of `model` by its int8 copy, in place."""
    for name in modules:
        owner, attr = _parent(model, name)
        table = getattr(owner, attr)
        q, scale = quantize_weight(table.weight)
        setattr(owner, attr, QuantizedEmbedding(q, scale, table.padding_idx))

