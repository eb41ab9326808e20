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
