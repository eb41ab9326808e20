"""Layer-wise aggregation against numpy.average over exactly the clients that trained each parameter."""

import numpy as np
import pytest
import torch

from budgetplan.errors import BudgetplanError
from budgetplan.execute.aggregate import expand_lora_upload, layerwise_weighted_mean


def _global():
    g = torch.Generator().manual_seed(0)
    return {"embed": torch.randn(5, 3, generator=g), "block0.w": torch.randn(3, 3, generator=g),
            "block1.w": torch.randn(3, 3, generator=g), "head.b": torch.randn(4, generator=g)}


def _update(global_state, keys, seed):
    g = torch.Generator().manual_seed(seed)
    return {k: global_state[k] + torch.randn(global_state[k].shape, generator=g) for k in keys}


def test_each_parameter_is_numpy_average_over_the_clients_that_trained_it():
    global_state = _global()
    updates = [(_update(global_state, ["block1.w", "head.b"], 1), 10),
               (_update(global_state, ["block0.w", "block1.w", "head.b"], 2), 30),
               (_update(global_state, ["head.b"], 3), 5)]
    result = layerwise_weighted_mean(global_state, updates)
    for key in global_state:
        holders = [(u[key], n) for u, n in updates if key in u]
        if not holders:
            assert torch.equal(result[key], global_state[key]), f"{key} was trained by nobody and must keep its value"
            continue
        expected = np.average(np.stack([t.numpy().astype(np.float64) for t, _ in holders]), axis=0,
                              weights=[n for _, n in holders])
        np.testing.assert_allclose(result[key].numpy(), expected.astype(np.float32), rtol=1e-6, atol=1e-7)
    # block0.w: one client only -> exactly its tensor; embed: nobody -> unchanged
    assert torch.equal(result["block0.w"], updates[1][0]["block0.w"])
    assert torch.equal(result["embed"], global_state["embed"])


def test_average_is_not_diluted_by_clients_that_did_not_train_a_key():
    global_state = {"a": torch.zeros(2), "b": torch.zeros(2)}
    updates = [({"a": torch.tensor([1.0, 1.0])}, 1), ({"a": torch.tensor([3.0, 3.0]), "b": torch.tensor([2.0, 4.0])}, 3)]
    result = layerwise_weighted_mean(global_state, updates)
    assert result["a"].tolist() == [2.5, 2.5]  # (1*1 + 3*3) / 4
    assert result["b"].tolist() == [2.0, 4.0]  # only the second client trained b: its value, not (0*1 + b*3)/4


def test_no_updates_keeps_everything():
    global_state = _global()
    result = layerwise_weighted_mean(global_state, [])
    assert all(torch.equal(result[k], global_state[k]) for k in global_state)


def test_unknown_key_raises_naming_it():
    with pytest.raises(BudgetplanError, match="block9.w"):
        layerwise_weighted_mean(_global(), [({"block9.w": torch.zeros(3, 3)}, 4)])


def test_wrong_shape_and_bad_count_raise():
    with pytest.raises(BudgetplanError, match="shape"):
        layerwise_weighted_mean(_global(), [({"head.b": torch.zeros(5)}, 4)])
    with pytest.raises(BudgetplanError, match="num_examples"):
        layerwise_weighted_mean(_global(), [({"head.b": torch.zeros(4)}, -1)])


def test_lora_upload_becomes_the_clients_effective_weight():
    global_state = {"q.weight": torch.randn(6, 4), "head.b": torch.zeros(2)}
    a, b = torch.randn(2, 4), torch.randn(6, 2)
    upload = {"q.lora_A.default.weight": a, "q.lora_B.default.weight": b, "head.b": torch.ones(2)}
    out = expand_lora_upload(upload, global_state, scaling=2.0)
    assert set(out) == {"q.weight", "head.b"}
    torch.testing.assert_close(out["q.weight"], global_state["q.weight"] + 2.0 * b @ a)
    transposed = expand_lora_upload(upload, {"q.weight": torch.zeros(4, 6), "head.b": torch.zeros(2)}, 2.0,
                                    frozenset({"q.weight"}))
    torch.testing.assert_close(transposed["q.weight"], (2.0 * b @ a).T)


def test_lora_upload_without_its_pair_raises():
    with pytest.raises(BudgetplanError, match="lora_B"):
        expand_lora_upload({"q.lora_A.default.weight": torch.zeros(2, 4)}, {"q.weight": torch.zeros(6, 4)}, 2.0)
