"""FLOPs of the fused scaled-dot-product-attention kernels, equal to what the eager (math) path counts.

A fused kernel (CPU flash, CUDA flash, memory-efficient, cuDNN, the overrideable backend) does the work of
torch's math path `aten._scaled_dot_product_attention_math` in one op: scale q and k, q @ k^T, add the mask,
softmax, dropout, @ v. Its FLOPs are defined as the count of that math path under the same counter and the
same per-op formulas, forward and backward (gradients of q, k and v, which every fused backward computes).
The count is taken once per shape on meta tensors (no data, no compute) and cached.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import torch

aten = torch.ops.aten

FORWARD_OPS = ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
               "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
               "_scaled_dot_product_fused_attention_overrideable")
BACKWARD_OPS = tuple(f"{name}_backward" for name in FORWARD_OPS)


def _bind(packet, args: tuple, kwargs: dict) -> dict:
    """The op's arguments by schema name (positional and keyword alike)."""
    names = [a.name for a in packet.default._schema.arguments]
    return {**dict(zip(names, args)), **kwargs}


def _shape(value) -> tuple[int, ...] | None:
    return tuple(value.shape) if isinstance(value, torch.Tensor) else None


def _dtype(value) -> torch.dtype:
    return value.dtype if isinstance(value, torch.Tensor) else torch.float32


def sdpa_formula(packet, backward: bool):
    """A raw-argument FLOP formula for one fused SDPA op (FlopCounterMode's get_raw form)."""

    def formula(*args, out_val=None, **kwargs) -> int:
        bound = _bind(packet, args, kwargs)
        mask = bound.get("attn_mask", bound.get("attn_bias"))
        q, k, v = bound["query"], bound["key"], bound["value"]
        return math_path_flops(_shape(q), _shape(k), _shape(v), _dtype(q), _shape(mask), _dtype(mask),
                               float(bound.get("dropout_p") or 0.0), bool(bound.get("is_causal") or False),
                               bound.get("scale"), backward)

    formula._get_raw = True  # FlopCounterMode passes tensors, not shapes
    return formula


@lru_cache(maxsize=256)
def math_path_flops(q_shape, k_shape, v_shape, dtype, mask_shape, mask_dtype, dropout_p: float, is_causal: bool,
                    scale, backward: bool) -> int:
    """FLOPs of the math path's forward (or its backward) for these shapes, counted on meta tensors.

    Counted on a fresh thread: the caller may be inside a dispatch mode or a backward kernel, where autograd
    and the active modes (thread-local) would not see the math path's own ops.
    """
    args = (q_shape, k_shape, v_shape, dtype, mask_shape, mask_dtype, dropout_p, is_causal, scale, backward)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(_count_math_path, *args).result()


def _count_math_path(q_shape, k_shape, v_shape, dtype, mask_shape, mask_dtype, dropout_p, is_causal, scale,
                     backward) -> int:
    from budgetplan.profile.flops import OpCounter  # local: flops imports this module

    q, k, v = (torch.empty(s, dtype=dtype, device="meta", requires_grad=backward) for s in (q_shape, k_shape, v_shape))
    mask = None if mask_shape is None else torch.empty(mask_shape, dtype=mask_dtype, device="meta")
    counter = OpCounter()
    with counter:
        out, _ = aten._scaled_dot_product_attention_math(
            q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale,
            enable_gqa=q_shape[-3] != k_shape[-3])
        forward = counter.flops
        if not backward:
            return forward
        torch.autograd.backward(out, torch.empty_like(out))
    return counter.flops - forward


def sdpa_formulas() -> dict:
    """op packet -> raw formula, for every fused SDPA variant this torch build has."""
    formulas = {}
    for names, backward in ((FORWARD_OPS, False), (BACKWARD_OPS, True)):
        for name in names:
            packet = getattr(aten, name, None)
            if packet is not None:
                formulas[packet] = sdpa_formula(packet, backward)
    return formulas
