"""Client training under a class configuration, the round loop, drop-and-report, checkpoint and resume."""

import json
import sys
from dataclasses import replace

import pytest
import torch

from budgetplan.errors import BudgetplanError, ConfigError, PlanError
from budgetplan.execute import rounds
from budgetplan.execute.client import TrainSettings, global_state_of, train_client
from budgetplan.execute.data import load_dataset
from fl_helpers import LAST_ONE, LAST_TWO, LORA_ALL, class_plan, memory_budget, tiny_bert, tiny_config, tiny_plan


def _data():
    return load_dataset("drugreview", tiny_bert(), seq_len=16, max_train=20, max_test=4)


def test_client_uploads_exactly_the_class_keys_and_is_deterministic():
    plan, data = class_plan("weak", 1.0, LAST_ONE), _data()
    state = global_state_of(tiny_bert())
    a = train_client(tiny_bert(), state, plan, data.train, TrainSettings(local_steps=2, batch_size=4), seed=5)
    b = train_client(tiny_bert(), state, plan, data.train, TrainSettings(local_steps=2, batch_size=4), seed=5)
    assert tuple(a.upload) == plan.trainable_names
    assert all(k.startswith(("base.encoder.layer.3.", "head.")) for k in a.upload)
    assert all(torch.equal(a.upload[k], b.upload[k]) for k in a.upload)
    assert any(not torch.equal(a.upload[k], state[k]) for k in a.upload)  # it did train
    assert a.num_examples == 20


def test_lora_client_uploads_adapters_only():
    plan = class_plan("lora", 1.0, LORA_ALL)
    result = train_client(tiny_bert(), global_state_of(tiny_bert()), plan, _data().train,
                          TrainSettings(local_steps=1, batch_size=4), seed=0)
    assert all("lora_" in k or k.startswith("head.") for k in result.upload)


def test_lr_groups_give_lora_and_head_their_scaled_rates_and_blocks_the_base_rate():
    from budgetplan.execute.client import configure, lr_groups

    plan = class_plan("mixed", 1.0, ("frozen", "lora-4", "trained", "trained"))
    loaded, trained = configure(tiny_bert(), global_state_of(tiny_bert()), plan, seed=0)
    settings = TrainSettings(lr=1e-3, lora_lr_scale=3.0, head_lr_scale=10.0)
    names = {id(p): n for n, p in loaded.model.named_parameters()}
    rates = {names[id(p)]: g["lr"] for g in lr_groups(loaded, settings) for p in g["params"]}
    assert sorted(rates) == sorted(trained)  # every trained parameter once, nothing frozen
    for name, rate in rates.items():
        expected = 3e-3 if ".layer.1." in name else 1e-3 if ".layer." in name else 1e-2  # lora / blocks / head
        assert ("lora_" in name) == (".layer.1." in name) and rate == pytest.approx(expected), name
    assert {n.split(".")[0] for n, r in rates.items() if r == pytest.approx(1e-2)} == {"head"}


def test_scaled_rates_move_lora_and_head_further_and_leave_the_blocks_alone():
    plan, data = class_plan("mixed", 1.0, ("frozen", "lora-4", "trained", "trained")), _data()
    state = global_state_of(tiny_bert())
    sgd = dict(local_steps=1, batch_size=4, optimizer="sgd", lr=1e-2)  # plain SGD: a step is lr x gradient
    base = train_client(tiny_bert(), state, plan, data.train, TrainSettings(**sgd), seed=3).upload
    scaled = train_client(tiny_bert(), state, plan, data.train,
                          TrainSettings(**sgd, lora_lr_scale=4.0, head_lr_scale=2.0), seed=3).upload
    for name in base:
        if name.startswith("head."):
            assert torch.allclose(scaled[name] - state[name], 2 * (base[name] - state[name]), atol=1e-6), name
        elif "lora_B" in name:  # B starts at zero: its first SGD step is the whole upload
            assert torch.allclose(scaled[name], 4 * base[name], atol=1e-6), name
        elif "lora_" not in name:
            assert torch.equal(scaled[name], base[name]), name


def _run(tmp_path, name, **kw):
    return rounds.run(tiny_plan(), tiny_config(**kw), tmp_path / name)


def test_frozen_parameters_keep_their_values_through_rounds(tmp_path):
    plan = tiny_plan(class_plan("weak", 1.0, LAST_ONE))
    start = global_state_of(tiny_bert())
    result = rounds.run(plan, tiny_config(rounds=1), tmp_path / "r")
    for key, value in result.global_state.items():
        trained = key.startswith(("base.encoder.layer.3.", "head."))
        assert torch.equal(value, start[key]) != trained, key


class Killed(Exception):
    pass


def test_resume_after_a_kill_ends_identical_to_an_uninterrupted_run(tmp_path):
    full = _run(tmp_path, "full", rounds=3)

    def kill_in_round_3(kind, payload):
        if kind == "client_done" and payload["round"] == 3:
            raise Killed()

    with pytest.raises(Killed):
        rounds.run(tiny_plan(), tiny_config(rounds=3), tmp_path / "killed", on_event=kill_in_round_3)
    saved = torch.load(tmp_path / "killed" / rounds.CHECKPOINT, weights_only=True)
    assert saved["round"] == 2  # rounds 1 and 2 were aggregated and kept
    resumed = rounds.run(tiny_plan(), tiny_config(rounds=3), tmp_path / "killed", resume=True)
    assert set(resumed.global_state) == set(full.global_state)
    assert all(torch.equal(resumed.global_state[k], full.global_state[k]) for k in full.global_state)
    assert [r.accuracy for r in resumed.history] == [r.accuracy for r in full.history]
    lines = (tmp_path / "killed" / "rounds.jsonl").read_text().splitlines()
    assert [json.loads(line)["round"] for line in lines] == [1, 2, 3]


def test_resume_with_changed_settings_is_refused(tmp_path):
    _run(tmp_path, "r", rounds=1)
    with pytest.raises(ConfigError, match="changed settings.*alpha"):
        rounds.run(tiny_plan(), tiny_config(rounds=2, alpha=0.9), tmp_path / "r", resume=True)
    with pytest.raises(ConfigError, match="--resume"):
        _run(tmp_path, "r", rounds=1)  # a second run into the same directory


def test_failing_clients_are_dropped_and_reported_and_the_round_completes(tmp_path):
    result = _run(tmp_path, "r", rounds=2, fail_prob=0.5)
    dropped = [d for r in result.history for d in r.dropped]
    assert dropped and all("simulated device failure" in d.reason for d in dropped)
    for record in result.history:
        assert len(record.trained) + len(record.dropped) == len(record.sampled)
        assert 0.0 <= record.accuracy <= 1.0


def test_a_class_over_its_memory_budget_is_dropped(tmp_path):
    plan = tiny_plan(class_plan("weak", 0.5, LAST_ONE, budget=memory_budget(1000)), class_plan("ok", 0.5, LAST_ONE))
    result = rounds.run(plan, tiny_config(rounds=1, measure=True), tmp_path / "r")
    record = result.history[0]
    assert record.dropped and all(d.class_name == "weak" and "memory budget" in d.reason for d in record.dropped)
    assert all(t.class_name == "ok" for t in record.trained)


def test_plan_for_another_model_is_refused(tmp_path):
    plan = tiny_plan()
    plan = replace(plan, model=replace(plan.model, fingerprint="sha256:0000"))
    with pytest.raises(PlanError, match="another model"):
        rounds.run(plan, tiny_config(rounds=1), tmp_path / "r")


def test_plan_with_wrong_trainable_names_is_refused(tmp_path):
    bad = replace(class_plan("weak", 1.0, LAST_ONE), trainable_names=("base.encoder.layer.0.x",))
    with pytest.raises(BudgetplanError, match="trainable names"):
        rounds.run(tiny_plan(bad), tiny_config(rounds=1), tmp_path / "r")


def test_a_class_with_no_client_is_reported_not_silently_unmeasured(tmp_path):
    from budgetplan.verify import FAIL, verify_run

    plan = tiny_plan(class_plan("many", 0.95, LAST_ONE), class_plan("rare", 0.05, LAST_TWO))
    rounds.run(plan, tiny_config(rounds=1, clients=4, clients_per_round=2, measure=True), tmp_path)
    (rare,) = [c for c in verify_run(tmp_path).checks if c.name == "rare"]
    assert rare.status == FAIL and "no client of this class" in rare.reasons[0]


@pytest.mark.parametrize("make, words", [
    (lambda: tiny_config(rounds=0), "rounds must be at least 1, got 0; pass RunConfig a valid rounds"),
    (lambda: tiny_config(clients_per_round=0), "clients_per_round must be at least 1, got 0"),
    (lambda: tiny_config(fail_prob=1.0), "fail_prob must be in [0, 1), got 1.0"),
    (lambda: TrainSettings(local_steps=0), "local_steps must be at least 1, got 0; pass TrainSettings a valid"),
    (lambda: TrainSettings(optimizer="lion"), "unknown optimizer 'lion'"),
    (lambda: TrainSettings(lr=float("nan")), "lr must be a positive number, got nan"),
    (lambda: TrainSettings(lora_lr_scale=0.0), "lora_lr_scale must be a positive number, got 0.0"),
    (lambda: TrainSettings(head_lr_scale=-1.0), "head_lr_scale must be a positive number, got -1.0"),
    (lambda: TrainSettings(max_seconds=0.0), "max_seconds must be a positive number, got 0.0"),
    (lambda: tiny_config(rounds=None), "rounds must be given, got None"),
    (lambda: TrainSettings(optimizer=None), "optimizer must be given, got None"),
])
def test_settings_validate_themselves_naming_field_and_value(make, words):
    """A Python caller hears the field's name, never a CLI flag (the CLI maps names to flags itself)."""
    with pytest.raises(ConfigError) as info:
        make()
    assert words in str(info.value) and "--" not in str(info.value)


def test_the_embedded_engine_imports_nothing_from_integrations(tmp_path):
    """`budgetplan run` (embedded) runs a round without loading budgetplan.integrations (the optional extra)."""
    import subprocess

    from pathlib import Path

    tests = str(Path(__file__).resolve().parent)
    code = (f"import sys, json; sys.path.insert(0, {tests!r}); from fl_helpers import tiny_plan, tiny_config; "
            "from budgetplan.engines import run_experiment; "
            f"run_experiment('embedded', tiny_plan(), tiny_config(rounds=1, clients=2, clients_per_round=1, "
            f"max_train=8, max_test=4), {str(tmp_path / 'r')!r}); "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('budgetplan.integrations') "
            "or m == 'flwr')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_another_trainer_runs_the_same_loop_and_ends_with_the_same_weights(tmp_path):
    """The engine extension point: a Trainer that trains the same jobs but replies in reverse order, and
    reaches only the even clients, gets the embedded loop's sampling, aggregation and records."""
    from budgetplan.execute.loop import EmbeddedTrainer, train_job

    class EvenClientsReversed:
        name = "even-reversed"

        def available(self, setup, round_index):
            return {c: name for c, name in enumerate(setup.class_of) if c % 2 == 0}

        def train(self, setup, global_state, round_index, jobs, done):
            replies = [train_job(setup, global_state, job) for job in jobs]
            for job in jobs:
                done(job.client)
            return replies[::-1]

    class EvenClients(EmbeddedTrainer):
        def available(self, setup, round_index):
            return {c: name for c, name in enumerate(setup.class_of) if c % 2 == 0}

    config = tiny_config(rounds=2, clients_per_round=2)
    ours = rounds.run(tiny_plan(), config, tmp_path / "a", trainer=EvenClientsReversed())
    embedded = rounds.run(tiny_plan(), config, tmp_path / "b", trainer=EvenClients())
    assert all(c % 2 == 0 for r in ours.history for c in r.sampled)
    assert [r.sampled for r in ours.history] == [r.sampled for r in embedded.history]
    assert {r.engine for r in ours.history} == {"even-reversed"}
    for key, value in embedded.global_state.items():
        assert torch.equal(ours.global_state[key], value), key
