"""FLOP counting: cross-check with fvcore (an independent tracer counting MACs) and the uncounted-op list."""

from __future__ import annotations

import pytest
import torch
from fvcore.nn import FlopCountAnalysis

from budgetplan.models import load_model
from budgetplan.profile.batch import make_batch
from budgetplan.profile.flops import OpCounter, reference_counter

MATMUL_OPS = ("aten.mm", "aten.addmm", "aten.bmm", "aten.convolution")
FVCORE_MATMUL_OPS = ("linear", "matmul", "addmm", "bmm", "conv")


class _Positional(torch.nn.Module):
    """fvcore traces positional inputs; the task model takes a batch dict."""

    def __init__(self, model, keys):
        super().__init__()
        self.model, self.keys = model, keys

    def forward(self, *inputs):
        return self.model.logits(dict(zip(self.keys, inputs)))


@pytest.mark.parametrize("family", ["tiny-bert", "tiny-vit", "tiny-gpt2"])
def test_forward_matmul_flops_are_twice_fvcore_macs(family):
    loaded = load_model(family)
    loaded.model.eval()
    batch = make_batch(loaded, 2, 8)
    batch.pop("labels")
    keys = list(batch)
    analysis = FlopCountAnalysis(_Positional(loaded.model, keys), tuple(batch[k] for k in keys))
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    fvcore_macs = sum(v for op, v in analysis.by_operator().items() if op in FVCORE_MATMUL_OPS)
    counter = OpCounter()
    with counter, torch.no_grad():
        loaded.model.logits(batch)
    ours = sum(v for op, v in counter.flops_by_op.items() if op in MATMUL_OPS)
    assert fvcore_macs > 0
    assert ours == 2 * fvcore_macs


def test_counter_agrees_with_torch_flop_counter_mode_on_forward_and_backward():
    loaded = load_model("tiny-gpt2")
    batch = make_batch(loaded, 2, 8)
    ours = OpCounter()
    with ours:
        loaded.model(batch).backward()
    loaded.model.zero_grad(set_to_none=True)  # else the second backward also counts gradient accumulation
    with reference_counter() as reference:
        loaded.model(batch).backward()
    assert ours.flops == reference.get_total_flops() > 0


def test_elementwise_formulas_follow_the_stated_factors():
    x = torch.randn(3, 5)
    counter = OpCounter()
    with counter:
        torch.nn.functional.gelu(x)  # 8 per element
        torch.nn.functional.layer_norm(x, (5,))  # 8 per input element
        x + x  # 1 per element
    assert counter.flops == 8 * 15 + 8 * 15 + 15


def test_ops_without_a_formula_are_listed_not_silently_zero():
    counter = OpCounter()
    with counter:
        torch.cumsum(torch.randn(4, 4), dim=0)
        torch.cumsum(torch.randn(4, 4), dim=1)
    assert counter.uncounted["aten.cumsum"] == 2
    assert counter.flops == 0


def _attention_inputs(heads_kv=2, grad=True):
    torch.manual_seed(0)
    q = torch.randn(2, 4, 16, 8, requires_grad=grad)
    k, v = (torch.randn(2, heads_kv, 16, 8, requires_grad=grad) for _ in range(2))
    return q, k, v


def _fwd_bwd(counter_factory, run):
    with counter_factory() as counter:
        out = run()
        forward = counter.flops if isinstance(counter, OpCounter) else counter.get_total_flops()
        out.backward(torch.ones_like(out))
        total = counter.flops if isinstance(counter, OpCounter) else counter.get_total_flops()
    return forward, total - forward


@pytest.mark.parametrize("mask, causal", [(False, False), (False, True), (True, False)])
def test_fused_cpu_sdpa_counts_what_the_math_path_counts(mask, causal):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    attn_mask = torch.zeros(16, 16) if mask else None
    results = {}
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.MATH):
        for factory in (OpCounter, reference_counter):
            q, k, v = _attention_inputs()

            def run():
                with sdpa_kernel(backend):
                    return torch.nn.functional.scaled_dot_product_attention(
                        q, k, v, attn_mask=attn_mask, is_causal=causal, enable_gqa=True)

            results[backend, factory] = _fwd_bwd(factory, run)
    assert len(set(results.values())) == 1, results
    forward, backward = results[SDPBackend.MATH, OpCounter]
    assert forward > 2 * 2 * (2 * 4 * 16 * 16 * 8) and backward > forward  # two bmms plus elementwise work


def test_every_fused_sdpa_variant_has_the_math_path_formula_forward_and_backward():
    from budgetplan.profile.flops import BACKWARD_OPS, FORWARD_OPS, sdpa_formulas

    q, k, v = _attention_inputs(heads_kv=4)
    expected = _fwd_bwd(OpCounter, lambda: torch.ops.aten._scaled_dot_product_attention_math(q, k, v)[0])
    formulas = {str(op).split(".")[-1]: f for op, f in sdpa_formulas().items()}
    assert set(formulas) == set(FORWARD_OPS) | set(BACKWARD_OPS)
    args = dict(query=q, key=k, value=v, dropout_p=0.0, is_causal=False)
    for name in FORWARD_OPS:
        assert formulas[name](**args) == expected[0], name
        assert formulas[f"{name}_backward"](grad_out=torch.ones_like(q), **args) == expected[1], name


def test_safe_softmax_counts_like_softmax():
    x = torch.randn(3, 7)
    counter = OpCounter()
    with counter:
        torch.ops.aten._safe_softmax(x, -1)
    assert counter.flops == 5 * 21 and not counter.uncounted
