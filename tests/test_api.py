"""The public Python API: light import, models in memory handled as files, apply() twice, HF Trainer, example."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertModel

import budgetplan
from budgetplan.plan import build_plan, class_for_states

SRC = str(Path(budgetplan.__file__).resolve().parents[1])
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CONFIG = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
              max_position_embeddings=64)


def batch(n: int = 4, seq: int = 16) -> dict:
    torch.manual_seed(1)
    return {"input_ids": torch.randint(0, 1000, (n, seq)), "attention_mask": torch.ones(n, seq, dtype=torch.long),
            "labels": torch.randint(0, 3, (n,))}


@pytest.fixture(scope="module")
def task_and_profile():
    torch.manual_seed(0)
    task = budgetplan.load(BertModel(BertConfig(**CONFIG)), num_labels=3)
    return task, budgetplan.profile_model(task, batch(), lora_ranks=(4, 8), measure=False)


@pytest.mark.parametrize("module", ["budgetplan", "budgetplan.cli"])  # the CLI: `--version`, `devices list` start fast
def test_import_is_light(module):
    code = f"import sys, {module}; print(sorted(m for m in ('torch', 'transformers', 'ortools') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": SRC}, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stdout + done.stderr


def test_the_surface_is_documented():
    for name in ("load", "profile_model", "solve_plan", "apply", "layerwise_mean", "flower_apps", "device"):
        assert getattr(budgetplan, name).__doc__, name
    assert callable(budgetplan.profile_model) and callable(budgetplan.solve_plan)


def test_a_model_in_memory_gets_eager_attention_and_costs_equal_to_the_file_form(task_and_profile, tmp_path):
    task, profile = task_and_profile
    assert task.model.base.config._attn_implementation == "eager"  # built with SDPA by transformers 5
    path = tmp_path / "model.pt"
    torch.save({"config": task.model.base.config.to_dict(), "state_dict": task.model.base.state_dict()}, path)
    from_file = budgetplan.profile_model(str(path), batch(), lora_ranks=(4, 8), measure=False, num_labels=3)
    assert [(c.flops_forward, c.flops_backward, c.activation_bytes) for c in profile.configs] == \
           [(c.flops_forward, c.flops_backward, c.activation_bytes) for c in from_file.configs]
    assert profile.model.fingerprint == from_file.model.fingerprint


def two_class_plan(profile):
    first = class_for_states(profile, "first", 0.5, ("lora-4", "lora-4", "trained", "trained"))
    second = class_for_states(profile, "second", 0.5, ("frozen_outside", "lora-8", "frozen_in_path", "trained"))
    return build_plan(profile, [first, second])


def test_apply_twice_leaves_only_the_second_plans_adapters(task_and_profile):
    task, profile = task_and_profile
    plan = two_class_plan(profile)
    base_before = {n: p.detach().clone() for n, p in task.model.named_parameters()}
    budgetplan.apply(plan, task, "first")
    first_adapters = {n for n, _ in task.model.named_parameters() if "lora_" in n}
    assert any(".layer.0." in n for n in first_adapters)
    model = budgetplan.apply(plan, task, "second")
    adapters = {n: p for n, p in task.model.named_parameters() if "lora_" in n}
    assert adapters and all(".layer.1." in n for n in adapters)  # none of block 0's rank-4 adapters is left
    assert all(8 in p.shape for n, p in adapters.items())
    trained = {n for n, p in task.model.named_parameters() if p.requires_grad}
    assert trained == set(plan.by_name("second").trainable_names) == set(model.trainable_names)
    # a LoRA'd layer keeps its weight under .base_layer; every base weight is unchanged (nothing merged)
    after = {n.replace(".base_layer", ""): p for n, p in task.model.named_parameters() if "lora_" not in n}
    assert set(after) == set(base_before) and all(torch.equal(after[n], base_before[n]) for n in after)


def test_planned_model_trains_under_an_hf_trainer(task_and_profile, tmp_path):
    from transformers import Trainer, TrainingArguments

    task, profile = task_and_profile
    plan = two_class_plan(profile)
    model = budgetplan.apply(plan, task, "second")
    data = batch(8)
    rows = [{k: v[i] for k, v in data.items()} for i in range(8)]
    before = {n: p.detach().clone() for n, p in task.model.named_parameters() if p.requires_grad}
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, report_to=[],
                             use_cpu=True, save_strategy="no", logging_strategy="no", learning_rate=1e-2)
    Trainer(model=model, args=args, train_dataset=rows).train()
    changed = [n for n, p in task.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert changed and set(changed) <= set(model.trainable_names)
    assert model(**data).loss.ndim == 0 and model(**{k: v for k, v in data.items() if k != "labels"}).loss is None


def test_solve_plan_keeps_a_class_that_fits_nothing_as_inactive(task_and_profile, tmp_path):
    _, profile = task_and_profile
    tiny = budgetplan.device("jetson-nano")
    import dataclasses

    starved = dataclasses.replace(tiny, name="starved", memory_bytes=1024)
    plan = budgetplan.solve_plan(profile, [tiny, starved])
    assert plan.by_name("jetson-nano").active and not plan.by_name("starved").active
    assert "needs" in plan.by_name("starved").reason
    with pytest.raises(budgetplan.BudgetplanError, match="sits out"):
        budgetplan.apply(plan, task_and_profile[0], "starved")


def test_in_process_example_runs(tmp_path):
    done = subprocess.run([sys.executable, str(EXAMPLES / "in_process.py"), str(tmp_path)], capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": SRC})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "step 2: loss" in done.stdout and (tmp_path / "plan.json").is_file()
    assert budgetplan.read_plan(tmp_path / "plan.json").by_name("my-board").active
