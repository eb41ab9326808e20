"""FLOP counting of the ops autograd really runs.

Counting convention, stated once:
- matmul-class ops (mm, addmm, bmm, baddbmm, convolution and their backward) use torch's own formulas in
  torch.utils.flop_counter: FLOPs = 2 x MACs;
- every fused scaled-dot-product-attention kernel (CPU flash, CUDA flash, efficient, cuDNN), forward and
  backward, counts what torch's eager math path counts for the same shapes (the SDPA
  section below);
- the per-element formulas below cover norms, softmax, activations, dropout, reductions and elementwise
  arithmetic (residual adds, scaling): FLOPs = factor x elements of the tensor named in the table;
- data movement, views and tensor creation cost 0 (ZERO_COST_OPS);
- any other executed op is *uncounted*: it is reported by name and call count, never silently taken as 0.
The optimizer step is not counted (its cost is per parameter, not per sample).
"""

from __future__ import annotations

import math
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry as TORCH_MATMUL_FORMULAS
from torch.utils.flop_counter import shape_wrapper

aten = torch.ops.aten

# op -> (FLOPs per element, which tensor's elements: "out" or "in" = first argument)
ELEMENTWISE_FORMULAS: dict[object, tuple[int, str]] = {
    aten.native_layer_norm: (8, "in"),  # mean, centre, square, variance, rstd, scale, shift
    aten.native_layer_norm_backward: (12, "in"),
    aten._softmax: (5, "out"),  # max, subtract, exp, sum, divide
    aten._safe_softmax: (5, "out"),  # softmax of SDPA's math path (fully masked rows give 0, not NaN)
    aten._softmax_backward_data: (4, "out"),
    aten._log_softmax: (5, "out"),
    aten._log_softmax_backward_data: (4, "out"),
    aten.gelu: (8, "out"),  # erf polynomial
    aten.gelu_backward: (12, "out"),
    aten.silu: (4, "out"),
    aten.silu_backward: (6, "out"),
    aten.relu: (1, "out"),
    aten.threshold_backward: (1, "out"),
    aten.tanh_backward: (3, "out"),
    # Dropout: the fused kernel (CUDA) costs 2 per element (draw, scale); on CPU it runs as bernoulli_ (draw),
    # div_ (scale the mask) and mul (apply) = 3 per element forward, and one mul per element backward.
    aten.native_dropout: (2, "in"),
    aten.native_dropout_backward: (2, "in"),
    aten.bernoulli_: (1, "out"),
    aten.sum: (1, "in"),
    aten.mean: (1, "in"),
    aten.all: (1, "in"),
    aten.any: (1, "in"),
    aten.amax: (1, "in"),
    aten.embedding_dense_backward: (1, "in"),  # scatter-add of the incoming gradient
    aten.nll_loss_forward: (1, "rows"),
    aten.nll_loss_backward: (1, "rows"),
}
for _op in ("add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "neg", "pow", "rsqrt", "sqrt",
            "exp", "log", "sin", "cos", "tanh", "sigmoid", "clamp", "clamp_min", "clamp_max", "where", "masked_fill",
            "masked_fill_", "le", "lt", "ge", "gt", "eq", "ne", "bitwise_and", "bitwise_or", "bitwise_not",
            "logical_not", "reciprocal", "abs", "maximum", "minimum"):
    ELEMENTWISE_FORMULAS[getattr(aten, _op)] = (1, "out")

ZERO_COST_OPS = frozenset(
    getattr(aten, name)
    for name in (
        "_local_scalar_dense", "_to_copy", "_unsafe_view", "_reshape_alias", "alias", "arange", "as_strided",
        "cat", "clone", "contiguous", "copy_", "detach", "embedding", "empty", "empty_like", "empty_strided",
        "expand", "fill_", "full", "full_like", "gather", "index", "index_select", "lift_fresh", "new_empty",
        "new_empty_strided", "new_full", "new_ones", "new_zeros", "ones", "ones_like", "permute", "repeat",
        "reshape", "scalar_tensor", "select", "select_backward", "slice", "slice_backward", "split",
        "split_with_sizes", "squeeze", "stack", "t", "transpose", "unbind", "unsqueeze", "view", "zero_",
        "zeros", "zeros_like", "unfold", "_unsafe_index", "masked_select", "is_same_size", "sym_size",
        "sym_numel", "sym_stride", "sym_storage_offset", "set_", "resize_", "_has_compatible_shallow_copy_type",
        "diagonal", "tril", "triu", "item", "is_nonzero", "scatter", "index_put", "index_put_",
        "_unsafe_index_put", "flip", "roll", "narrow", "view_as", "expand_as",
    )
    if hasattr(aten, name)
) | {torch.ops.profiler._record_function_enter_new, torch.ops.profiler._record_function_exit}  # profiler markers


# ---- fused scaled-dot-product attention ------------------------------------------------------------------
# A fused kernel (CPU flash, CUDA flash, memory-efficient, cuDNN, the overrideable backend) does the work of
# torch's math path `aten._scaled_dot_product_attention_math` in one op: scale q and k, q @ k^T, add the mask,
# softmax, dropout, @ v. Its FLOPs are defined as the count of that math path under the same counter and the
# same per-op formulas, forward and backward (gradients of q, k and v, which every fused backward computes).
# The count is taken once per shape on meta tensors (no data, no compute) and cached.

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


def _numel(shape) -> int:
    if isinstance(shape, (torch.Size, tuple, list)) and all(isinstance(d, int) for d in shape):
        return math.prod(shape)
    return 0


def _elementwise_formula(factor: int, which: str):
    def formula(*args, out_shape=None, **kwargs) -> int:
        if which == "rows":
            return factor * (args[0][0] if args and _numel(args[0]) and len(args[0]) > 1 else 1)
        if which == "in" or not _numel(out_shape):
            return factor * _numel(args[0]) if args else 0
        return factor * _numel(out_shape)

    return formula


def extra_formulas() -> dict:
    """budgetplan's formulas in FlopCounterMode's custom_mapping form (shape functions; SDPA ones take raw args)."""
    elementwise = {op: _elementwise_formula(factor, which) for op, (factor, which) in ELEMENTWISE_FORMULAS.items()}
    return {**elementwise, **sdpa_formulas()}


def _wrapped(formula):
    return formula if getattr(formula, "_get_raw", False) else shape_wrapper(formula)


FORMULAS = {**TORCH_MATMUL_FORMULAS, **{op: _wrapped(f) for op, f in extra_formulas().items()}}


class OpCounter(TorchDispatchMode):
    """Counts FLOPs of every op run under it (forward and backward) and lists ops with no formula."""

    def __init__(self) -> None:
        super().__init__()
        self.flops = 0
        self.flops_by_op: Counter[str] = Counter()
        self.uncounted: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        formula = FORMULAS.get(packet)
        if formula is not None:
            count = int(formula(*args, **kwargs, out_val=out))
            self.flops += count
            self.flops_by_op[str(packet)] += count
        elif packet not in ZERO_COST_OPS:
            self.uncounted[str(packet)] += 1
        return out


def reference_counter():
    """torch's own FlopCounterMode with budgetplan's formulas: the independent reference used in tests."""
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False, custom_mapping=extra_formulas())
