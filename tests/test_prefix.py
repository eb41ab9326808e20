"""The frozen-prefix cache of simulation runs (execute/prefix.py): a cached run ends where an uncached one does
(to float rounding: the prefix runs once in other batches), the prefix is found from the plan, and training is
cached only where the prefix draws no randomness (tiny-bert's dropout: evaluation only)."""

from __future__ import annotations

import dataclasses

import torch
from fl_helpers import class_plan, tiny_config, tiny_plan

from budgetplan.execute.client import evaluate
from budgetplan.execute.prefix import cache_prefix, frozen_prefix, prefix_of
from budgetplan.execute.rounds import prepare, run

LAST_TWO = ("frozen", "frozen", "trained", "trained")
LORA_TOP = ("frozen", "frozen", "frozen", "lora-4")


def no_dropout(setup):
    """Dropout off everywhere (a deterministic prefix): both runs of a comparison get it."""
    for module in setup.template.model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return setup


def _plan():
    return tiny_plan(class_plan("a", 0.5, LAST_TWO), class_plan("b", 0.5, LORA_TOP))


def _compare(tmp_path, hook_plain, hook_cached, tolerance: float):
    plan, config = _plan(), tiny_config(rounds=2)
    plain = run(plan, config, tmp_path / "plain", prepare_hook=hook_plain)
    cached = run(plan, config, tmp_path / "cached", prepare_hook=hook_cached)
    for a, b in zip(plain.history, cached.history):
        assert abs(a.loss - b.loss) <= tolerance and abs(a.accuracy - b.accuracy) <= 1 / 24
        for x, y in zip(a.trained, b.trained):
            assert abs(x.loss_first - y.loss_first) <= tolerance
    worst = max(float((plain.global_state[k] - cached.global_state[k]).abs().max()) for k in plain.global_state)
    assert worst <= tolerance, worst
    print(f"largest difference of a global weight: {worst:.3g}")
    return plain, cached


def test_prefix_is_the_blocks_no_active_class_trains():
    assert frozen_prefix(_plan()) == 2
    assert frozen_prefix(tiny_plan(class_plan("a", 1.0, ("lora-4",) * 4))) == 0
    off = dataclasses.replace(class_plan("c", 0.5, ("trained",) * 4), active=False)
    assert frozen_prefix(tiny_plan(class_plan("a", 0.5, LAST_TWO), off)) == 2  # a class that sits out does not count
    embeddings = class_plan("e", 1.0, LAST_TWO, train_embeddings=True)
    assert frozen_prefix(tiny_plan(embeddings)) == 0


def test_cached_training_run_equals_the_plain_run(tmp_path):
    """No dropout: the training and the test prefix are both cached; the run agrees to float rounding."""
    _compare(tmp_path, no_dropout, lambda s: cache_prefix(no_dropout(s)), 1e-5)


def test_prefix_with_dropout_caches_evaluation_only(tmp_path):
    setup = cache_prefix(prepare(_plan(), tiny_config(rounds=1)))
    table = prefix_of(setup)
    assert table is not None and table.blocks == 2 and table.train_rows == 0  # dropout: training not cached
    assert "prefix_row" in setup.dataset.test.inputs and "prefix_row" not in setup.dataset.train.inputs
    _compare(tmp_path, None, cache_prefix, 1e-5)


def test_cache_replays_stored_outputs(tmp_path):
    """The cached model really reads the table: a changed table changes the evaluation."""
    setup = cache_prefix(no_dropout(prepare(_plan(), tiny_config(rounds=1))))
    table = prefix_of(setup)
    assert table.train_rows == len(setup.dataset.train)
    before = evaluate(setup.template, setup.dataset.test)["loss"]
    table.outputs[0] = torch.zeros_like(table.outputs[0])
    assert evaluate(setup.template, setup.dataset.test)["loss"] != before
