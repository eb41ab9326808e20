"""The training recipe (issue 20 item 3): server optimizers against their formulas by hand (numpy), aggregation
weights recorded per client and equal to numpy.average, the server and client optimizer state kept across rounds
and in the checkpoint (resume bit-identical), the recipe in the plan JSON as the run's default."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from budgetplan.execute import rounds
from budgetplan.execute.aggregate import AggregationError, ServerOptimizer, server_step
from budgetplan.execute.loop import Reply, aggregate, usable_updates
from fl_helpers import LAST_ONE, LAST_TWO, class_plan, tiny_config, tiny_plan

KEYS = ("a", "b", "c")


def _state(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(3, 2, generator=g), "b": torch.randn(4, generator=g), "c": torch.randn(2, generator=g)}


def _np(state):
    return {k: v.numpy().astype(np.float64) for k, v in state.items()}


def test_fedadam_two_steps_equal_the_formula_by_hand_and_an_untrained_tensor_keeps_value_and_state():
    opt = ServerOptimizer("fedadam", lr=0.05, momentum=0.8, beta2=0.95, tau=1e-3)
    x0, avg1, avg2 = _state(0), _state(1), _state(2)
    x1, s1 = server_step(opt, x0, avg1, {"a", "b"}, {})
    x2, s2 = server_step(opt, x1, avg2, {"a", "c"}, s1)  # b untrained in round 2; c trained for the first time
    m, v, x = {k: np.zeros_like(t) for k, t in _np(x0).items()}, {k: np.zeros_like(t) for k, t in _np(x0).items()}, _np(x0)
    for avg, trained in ((_np(avg1), ("a", "b")), (_np(avg2), ("a", "c"))):
        for k in trained:  # Reddi et al. 2021, Algorithm 2 (FedAdam), Delta = average - x
            delta = avg[k] - x[k]
            m[k] = 0.8 * m[k] + 0.2 * delta
            v[k] = 0.95 * v[k] + 0.05 * delta ** 2
            x[k] = x[k] + 0.05 * m[k] / (np.sqrt(v[k]) + 1e-3)
    for k in KEYS:
        np.testing.assert_allclose(x2[k].numpy(), x[k], rtol=1e-5, atol=1e-6)
    assert torch.equal(x2["b"], x1["b"])  # nobody trained b in round 2: its value ...
    assert torch.equal(s2["m"]["b"], s1["m"]["b"]) and torch.equal(s2["v"]["b"], s1["v"]["b"])  # ... and state
    np.testing.assert_allclose(s2["v"]["a"].numpy(), v["a"], rtol=1e-5)
    assert "c" not in s1["m"] and "c" in s2["m"]


def test_fedavgm_is_momentum_on_the_pseudo_gradient_and_fedavg_takes_the_average():
    x0, avg1, avg2 = _state(3), _state(4), _state(5)
    opt = ServerOptimizer("fedavgm", lr=0.7, momentum=0.5)
    x1, s1 = server_step(opt, x0, avg1, set(KEYS), {})
    x2, _ = server_step(opt, x1, avg2, set(KEYS), s1)
    for k in KEYS:
        d1 = _np(avg1)[k] - _np(x0)[k]
        m1 = d1
        x1_ref = _np(x0)[k] + 0.7 * m1
        m2 = 0.5 * m1 + (_np(avg2)[k] - x1_ref)
        np.testing.assert_allclose(x2[k].numpy(), x1_ref + 0.7 * m2, rtol=1e-5, atol=1e-6)
    same, state = server_step(ServerOptimizer(), x0, avg1, set(KEYS), {})
    assert state == {} and all(same[k] is avg1[k] for k in KEYS)  # fedavg: the average itself, bit for bit
    with pytest.raises(AggregationError, match="unknown server optimizer"):
        ServerOptimizer("fedprox")


def _replies(plan):
    """Three replies of the 'full' class: clients with 10, 40 and 90 stored examples, 8, 8 and 16 samples."""
    names = plan.by_name("full").trainable_names
    g = torch.Generator().manual_seed(7)
    from fl_helpers import tiny_bert
    params = dict(tiny_bert().model.named_parameters())
    out = []
    for client, (examples, samples) in enumerate([(10, 8), (40, 8), (90, 16)]):
        upload = {n: torch.randn(params[n].shape, generator=g) for n in names}
        out.append(Reply(client, "full", upload, examples, {"samples": samples}))
    return out


@pytest.mark.parametrize("how, weights", [("examples", [10, 40, 90]), ("samples", [8, 8, 16]),
                                          ("uniform", [1, 1, 1])])
def test_aggregation_weights_are_recorded_and_the_mean_is_numpy_average(how, weights):
    from fl_helpers import tiny_bert
    from budgetplan.execute.client import global_state_of
    plan = tiny_plan(class_plan("full", 1.0, LAST_TWO))
    start = global_state_of(tiny_bert())
    replies = _replies(plan)
    new, trained, dropped = aggregate(plan, start, replies, frozenset(), weights=how)
    assert not dropped and [t.weight for t in trained] == weights
    key = plan.by_name("full").trainable_names[0]
    expected = np.average(np.stack([r.upload[key].numpy().astype(np.float64) for r in replies]), axis=0,
                          weights=weights)
    np.testing.assert_allclose(new[key].numpy(), expected, rtol=1e-6, atol=1e-7)


def test_samples_weights_move_the_mean_away_from_the_client_with_most_stored_data():
    from fl_helpers import tiny_bert
    from budgetplan.execute.client import global_state_of
    plan = tiny_plan(class_plan("full", 1.0, LAST_TWO))
    start, replies = global_state_of(tiny_bert()), _replies(plan)
    key = plan.by_name("full").trainable_names[0]
    big = replies[2].upload[key]  # 90 stored examples, 16 samples: 64% of the weight by examples, 50% by samples
    distance = {how: float((aggregate(plan, start, replies, frozenset(), weights=how)[0][key] - big).norm())
                for how in ("examples", "samples", "uniform")}
    assert distance["examples"] < distance["samples"] < distance["uniform"]
    old = Reply(3, "full", replies[0].upload, 5, {})  # a node that does not report samples
    _, trained, dropped = usable_updates(plan, start, [old], frozenset(), "samples")
    assert not trained and "samples" in dropped[0].reason


def test_fedadam_and_kept_client_state_resume_bit_identical(tmp_path):
    plan = tiny_plan(class_plan("weak", 0.5, LAST_ONE), class_plan("mid", 0.5, LAST_TWO))
    config = tiny_config(rounds=3, clients=3, clients_per_round=2, server_optimizer="fedadam", server_lr=1e-3,
                         aggregation_weights="samples", client_optimizer_state="keep")
    full = rounds.run(plan, config, tmp_path / "full")
    with pytest.raises(KeyError):
        rounds.run(plan, config, tmp_path / "cut", on_event=_stop_in_round(3))
    saved = torch.load(tmp_path / "cut" / rounds.CHECKPOINT, weights_only=True)
    assert saved["round"] == 2 and saved["server_state"]["m"] and saved["client_states"]
    resumed = rounds.run(plan, config, tmp_path / "cut", resume=True)
    assert all(torch.equal(resumed.global_state[k], full.global_state[k]) for k in full.global_state)
    assert [r.accuracy for r in resumed.history] == [r.accuracy for r in full.history]
    assert all(t.weight == t.samples == 8 for r in full.history for t in r.trained)  # 2 steps x batch 4
    plain = rounds.run(plan, tiny_config(rounds=3, clients=3, clients_per_round=2), tmp_path / "plain")
    assert any(not torch.equal(plain.global_state[k], full.global_state[k]) for k in full.global_state)


def _stop_in_round(round_index: int):
    def on_event(kind, payload):
        if kind == "client_done" and payload["round"] == round_index:
            raise KeyError("stopped")
    return on_event


def _examples(n: int = 10, seq: int = 8):
    from budgetplan.execute.data import Examples
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(5, 90, (n, seq), generator=g)
    return Examples({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, torch.randint(0, 3, (n,), generator=g),
                    None)


def test_kept_client_optimizer_state_makes_the_next_rounds_first_step_that_of_a_never_reset_optimizer():
    from budgetplan.execute import client as c
    from budgetplan.profile.measure import make_optimizer
    from fl_helpers import tiny_bert
    template, data, plan_class = tiny_bert(), _examples(), class_plan("mid", 1.0, LAST_TWO)
    settings = c.TrainSettings(local_steps=2, batch_size=4, lr=1e-2, optimizer="adamw")
    g0 = c.global_state_of(template)
    first = c.train_client(template, g0, plan_class, data, settings, seed=11, optimizer_state={})
    assert first.optimizer_state and set(first.optimizer_state) == set(first.upload)
    g1 = {k: (v + 0.5 * (first.upload[k] - v)) if k in first.upload else v for k, v in g0.items()}  # a server mix
    one = c.TrainSettings(local_steps=1, batch_size=4, lr=1e-2, optimizer="adamw")
    kept = c.train_client(template, g1, plan_class, data, one, seed=12, optimizer_state=first.optimizer_state)
    fresh = c.train_client(template, g1, plan_class, data, one, seed=12)
    # the reference: one optimizer, never reset; between the rounds the parameters take the global values
    loaded, trained = c.configure(template, g0, plan_class, 11)
    loaded.model.train()
    optimizer = make_optimizer(c.lr_groups(loaded, settings), "adamw", 1e-2)
    for seed, steps, start in ((11, 2, None), (12, 1, g1)):
        if start is not None:
            with torch.no_grad():
                for name, p in loaded.model.named_parameters():
                    p.copy_(start[name])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1)
            for index in c.batches(len(data), 4, steps, seed):
                loaded.model(data.batch(index)).backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
    params = dict(loaded.model.named_parameters())
    assert all(torch.allclose(kept.upload[k], params[k], rtol=0, atol=1e-7) for k in trained)
    assert any(not torch.allclose(fresh.upload[k], params[k], rtol=0, atol=1e-5) for k in trained)
    assert float(kept.optimizer_state[trained[0]]["step"]) == 3.0  # 2 steps, then 1 more
    assert first.optimizer_state[trained[0]]["step"] == 2.0  # the kept state itself was not changed


def test_the_plan_carries_its_recipe_and_runs_take_it_as_default_with_options_overriding(tmp_path):
    import dataclasses

    from budgetplan.cli.run_options import run_config
    from budgetplan.errors import PlanError
    from budgetplan.execute.settings import for_plan
    from budgetplan.integrations.flower.settings import run_config_from_values, run_config_values
    from budgetplan.plan import read_plan, write_plan
    from budgetplan.plan.recipe import Recipe
    recipe = Recipe(server_optimizer="fedavgm", server_momentum=0.5, aggregation_weights="uniform", lr=2e-3,
                    local_steps=3, head_lr_scale=4.0)
    plan = dataclasses.replace(tiny_plan(), recipe=recipe)
    write_plan(plan, tmp_path / "plan.json")
    back = read_plan(tmp_path / "plan.json")
    assert back.recipe == recipe and back.to_dict()["aggregation"]["weight"] == "uniform"
    assert back.digest() != tiny_plan().digest()  # a resumed run refuses another recipe
    cli = {"data": "drugreview", "lr": None, "local_steps": None, "server_optimizer": "fedadam"}
    config = run_config(back, cli)  # the CLI: the plan's recipe unless an option is given
    assert (config.server_optimizer, config.server_momentum, config.aggregation_weights) == ("fedadam", 0.5, "uniform")
    assert (config.train.lr, config.train.local_steps, config.train.head_lr_scale) == (2e-3, 3, 4.0)
    assert config.train.batch_size == plan.context.batch_size
    assert run_config(tiny_plan(), {"data": "drugreview", "lr": None}).train.lr == 5e-4  # no recipe: CLI default
    api = for_plan(back, {"data": "drugreview"})  # the Python API's way
    assert (api.server_optimizer, api.train.lr) == ("fedavgm", 2e-3)
    values = run_config_values(config)  # what export writes; a Flower config without a key takes the plan's
    assert run_config_from_values(values, back) == config
    missing = {k: v for k, v in values.items() if k not in ("server-optimizer", "lr")}
    assert run_config_from_values(missing, back).server_optimizer == "fedavgm"
    assert run_config_from_values(missing, back).train.lr == 2e-3
    data = back.to_dict()
    data["recipe"]["server_optimizer"] = "fedsgd"
    with pytest.raises(PlanError, match="recipe"):
        type(back).from_dict(data)


def test_keep_is_refused_on_flower_before_anything_runs(tmp_path):
    from budgetplan.engines import run_experiment
    from budgetplan.errors import ConfigError
    with pytest.raises(ConfigError, match="embedded engine only"):
        run_experiment("flower", tiny_plan(), tiny_config(client_optimizer_state="keep"), tmp_path / "r")
    assert not (tmp_path / "r").exists()
    pytest.importorskip("flwr")
    from budgetplan.integrations.flower.export import export_flower_app
    with pytest.raises(ConfigError, match="embedded engine only"):
        export_flower_app(tiny_plan(), tiny_config(client_optimizer_state="keep"), tmp_path / "app")
    assert not (tmp_path / "app").exists()


def test_solve_writes_the_recipe_options_into_the_plan(tmp_path):
    from typer.testing import CliRunner

    from budgetplan.cli import app
    out = tmp_path / "plan.json"
    result = CliRunner().invoke(app, ["solve", "--device", "jetson-nano", "--server-optimizer", "fedadam",
                                      "--aggregation-weights", "samples", "--client-optimizer-state", "keep",
                                      "--json", str(out)])
    assert result.exit_code == 0, result.output
    from budgetplan.plan import read_plan
    assert read_plan(out).recipe.to_dict() == {"server_optimizer": "fedadam", "aggregation_weights": "samples",
                                               "client_optimizer_state": "keep"}
    bad = CliRunner().invoke(app, ["solve", "--device", "jetson-nano", "--aggregation-weights", "size",
                                   "--json", str(tmp_path / "bad.json")])
    assert bad.exit_code == 2 and "--aggregation-weights" in bad.output and not (tmp_path / "bad.json").exists()


def test_flower_engine_runs_the_plans_recipe_like_the_embedded_engine(tmp_path):
    """The plan's recipe (FedAdam, samples weights) reaches the Flower ServerApp through the same loop: same
    weights as the embedded engine, each client's weight recorded, the server state in both checkpoints."""
    pytest.importorskip("flwr")
    import dataclasses
    import json

    from typer.testing import CliRunner

    from budgetplan.cli import app
    from budgetplan.plan.recipe import Recipe
    plan = dataclasses.replace(tiny_plan(class_plan("weak", 0.5, LAST_ONE), class_plan("mid", 0.5, LAST_TWO)),
                               recipe=Recipe(server_optimizer="fedadam", server_lr=1e-3, aggregation_weights="samples"))
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan.to_dict()))
    small = ["--data", "drugreview", "--rounds", "2", "--clients", "3", "--clients-per-round", "2", "--local-steps",
             "2", "--max-train", "60", "--max-test", "16", "--seq-len", "16", "--seed", "3", "--no-measure"]
    runs = {}
    for name in ("embedded", "flower"):
        result = CliRunner().invoke(app, ["run", str(path), *small, "--engine", name, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        runs[name] = torch.load(tmp_path / name / rounds.CHECKPOINT, weights_only=True)
    for key, tensor in runs["embedded"]["global_state"].items():
        assert torch.allclose(tensor, runs["flower"]["global_state"][key], rtol=0, atol=1e-6), key
    assert set(runs["flower"]["server_state"]) == {"m", "v"} and runs["flower"]["server_state"]["m"]
    for run in runs.values():
        trained = [t for r in json.loads(run["history"]) for t in r["trained"]]
        assert trained and all(t["weight"] == t["samples"] == 8 for t in trained)  # 2 steps x the plan's batch 4


def test_a_run_directory_from_before_recipes_keeps_its_plan_digest():
    """--resume compares the plan's digest with run.json's: a plan without a recipe, read by this version (schema
    2.2), hashes as the writer of tests/data/old-run did (2.1), so older runs still resume."""
    import json
    from pathlib import Path

    from budgetplan.plan import read_plan
    old = Path(__file__).parent / "data" / "old-run"
    assert read_plan(old / "plan.json").digest() == json.loads((old / "run.json").read_text())["plan"]
