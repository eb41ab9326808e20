"""The server checks every reply against the plan before aggregating (execute/loop.py: usable_upload, the one
check both engines run): only the class's trainable tensors, with the global model's names, shapes and dtypes,
finite, no more examples than the client's partition holds, and an update no longer than --max-update-norm.
A reply that fails is dropped with its reason in the round record and changes nothing in the global model.

The reference: the aggregate of the good replies alone, computed with numpy.average."""

import math

import numpy as np
import pytest
import torch

from budgetplan.execute.loop import Reply, ReplyBounds, aggregate, update_norm
from budgetplan.execute.settings import RunConfig, SettingError
from budgetplan.plan import ModelRef, Plan, PlanClass, PlanContext

KEYS = ("blk.1.weight", "head.bias")


def _global():
    g = torch.Generator().manual_seed(0)
    shapes = {"embed.weight": (5, 3), "blk.1.weight": (4, 3), "head.bias": (2,)}
    return {k: torch.randn(s, generator=g) for k, s in shapes.items()}


def _plan() -> Plan:
    full = PlanClass(name="full", share=1.0, block_states=("frozen", "trained"), trainable_names=KEYS)
    return Plan(model=ModelRef(name="synthetic", fingerprint="sha256:synthetic", num_blocks=2),
                context=PlanContext(task="classification", num_labels=2, batch_size=4, seq_len=8), classes=(full,))


def _good(client, scale=0.1, count=10):
    g = torch.Generator().manual_seed(100 + client)
    upload = {k: v + scale * torch.randn(v.shape, generator=g) for k, v in _global().items() if k in KEYS}
    return Reply(client, "full", upload, count, {"loss_first": 1.0, "loss_last": 0.5})


def _bad_variants():
    """(name, reply, words its reason must hold): one fault each, on an otherwise good reply."""
    extra = _good(2)
    extra.upload["embed.weight"] = torch.zeros(5, 3)
    shape = _good(3)
    shape.upload["head.bias"] = torch.zeros(3)
    nan = _good(4)
    nan.upload["blk.1.weight"][0, 0] = float("nan")
    inf = _good(5)
    inf.upload["head.bias"][1] = float("inf")
    dtype = _good(6)
    dtype.upload["head.bias"] = dtype.upload["head.bias"].double()
    ints = _good(7)
    ints.upload["head.bias"] = torch.tensor([1, 2])
    missing = _good(8)
    del missing.upload["head.bias"]
    heavy = _good(9, count=10**6)
    return [("extra tensor", extra, "1 unexpected (e.g. embed.weight)"), ("wrong shape", shape, "has shape (3,)"),
            ("NaN", nan, "non-finite"), ("infinity", inf, "non-finite"), ("wrong dtype", dtype, "dtype torch.float64"),
            ("integer tensor", ints, "not a floating-point tensor"), ("missing tensor", missing, "1 missing"),
            ("too many examples", heavy, "claims 1000000 examples, its partition holds 10")]


def _average(replies, key):
    return np.average(np.stack([r.upload[key].double().numpy() for r in replies]), axis=0,
                      weights=[r.num_examples for r in replies])


def test_a_bad_reply_is_dropped_with_its_reason_and_the_model_is_what_the_good_ones_make_it():
    good = [_good(0, count=10), _good(1, count=30)]
    bad = _bad_variants()
    bounds = ReplyBounds({c: 10 if c == 9 else 1000 for c in range(10)})
    new, trained, dropped = aggregate(_plan(), _global(), good + [r for _, r, _ in bad], frozenset(),
                                      bounds=bounds)
    assert [t.client for t in trained] == [0, 1]
    reasons = {d.client: d.reason for d in dropped}
    assert sorted(reasons) == [r.client for _, r, _ in bad]
    for name, reply, words in bad:
        assert words in reasons[reply.client], (name, reasons[reply.client])
        assert "\n" not in reasons[reply.client]
    for key in KEYS:
        np.testing.assert_allclose(new[key].double().numpy(), _average(good, key), rtol=1e-6, atol=1e-7)
    assert torch.equal(new["embed.weight"], _global()["embed.weight"])  # the extra tensor touched nothing


@pytest.mark.parametrize("index", range(8))
def test_a_round_of_only_bad_replies_leaves_the_global_model_bit_identical(index):
    name, reply, _ = _bad_variants()[index]
    new, trained, dropped = aggregate(_plan(), _global(), [reply], frozenset(), bounds=ReplyBounds({9: 10}))
    assert not trained and len(dropped) == 1, name
    assert all(torch.equal(new[k], v) for k, v in _global().items()), name


def test_max_update_norm_drops_the_long_update_and_keeps_the_short_one():
    short, long = _good(0, scale=0.01), _good(1, scale=10.0)
    norms = [update_norm(r.upload, _global()) for r in (short, long)]
    reference = [math.sqrt(sum(float(((r.upload[k] - _global()[k]).double() ** 2).sum()) for k in KEYS))
                 for r in (short, long)]
    assert norms == pytest.approx(reference)
    bound = (norms[0] + norms[1]) / 2
    new, trained, dropped = aggregate(_plan(), _global(), [short, long], frozenset(),
                                      bounds=ReplyBounds(None, bound))
    assert [t.client for t in trained] == [0]
    assert [d.client for d in dropped] == [1] and "update norm" in dropped[0].reason
    assert "--max-update-norm" in dropped[0].reason
    assert all(torch.equal(new[k], short.upload[k]) for k in KEYS)
    _, trained, _ = aggregate(_plan(), _global(), [short, long], frozenset(), bounds=ReplyBounds())  # no bound: both
    assert [t.client for t in trained] == [0, 1]


def test_max_update_norm_is_a_run_setting_with_its_rule():
    assert RunConfig(data="drugreview").max_update_norm is None
    assert RunConfig(data="drugreview", max_update_norm=2.5).max_update_norm == 2.5
    with pytest.raises(SettingError, match="max_update_norm"):
        RunConfig(data="drugreview", max_update_norm=0.0)


def test_a_node_claiming_more_samples_than_it_could_train_is_dropped_under_samples_weights():
    honest, greedy = _good(0), _good(1)
    honest.metrics["samples"], greedy.metrics["samples"] = 8, 10**6  # 2 local steps x batch 4 = 8 at most
    new, trained, dropped = aggregate(_plan(), _global(), [honest, greedy], frozenset(), weights="samples",
                                      bounds=ReplyBounds(max_samples=8))
    assert [t.client for t in trained] == [0] and [t.weight for t in trained] == [8]
    assert [d.client for d in dropped] == [1] and "more than local steps x batch size = 8" in dropped[0].reason
    assert all(torch.equal(new[k], honest.upload[k]) for k in KEYS)
    _, trained, _ = aggregate(_plan(), _global(), [honest, greedy], frozenset(), weights="samples")  # no bound
    assert [t.client for t in trained] == [0, 1]
