"""Flower integration: the flower engine against the embedded one, the loop's layer-wise mean over Flower
replies against numpy.average, one-line handling of bad nodes and replies, and the exported app.

Tests that need flwr call pytest.importorskip("flwr") (CI installs the extra); the missing-extra message is
checked without it.
"""

import importlib.util
import json
import logging
import tomllib

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from budgetplan.cli import app
from budgetplan import engines as engine
from budgetplan.plan import ModelRef, Plan, PlanClass, PlanContext
from fl_helpers import LAST_ONE, AnsweringGrid, class_plan, tiny_plan
from cli_helpers import assert_one_line_error

runner = CliRunner()
LORA_TOP = ("frozen", "frozen", "lora-4", "lora-4")
HEAD_ONLY = ("frozen",) * 4
SMALL = ["--data", "drugreview", "--rounds", "2", "--clients", "4", "--clients-per-round", "3", "--local-steps",
         "2", "--max-train", "80", "--max-test", "16", "--seq-len", "16", "--seed", "3", "--no-measure"]
# Both engines run the same code from the same seeds, so they agree bit for bit here (one torch thread on
# the server and in each Ray actor); the tolerance leaves room for thread-count-dependent summation order.
ATOL = 1e-6


@pytest.fixture()
def mixed_plan_file(tmp_path):
    plan = tiny_plan(class_plan("weak", 1 / 3, LAST_ONE), class_plan("lora", 1 / 3, LORA_TOP),
                     class_plan("head", 1 / 3, HEAD_ONLY))
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan.to_dict()))
    return path


# ---- (a) both engines, same seed, same global weights ---------------------------------------------------

def test_flower_engine_ends_with_the_embedded_engines_weights(mixed_plan_file, tmp_path):
    pytest.importorskip("flwr")
    runs = {}
    for name in ("embedded", "flower"):
        out = tmp_path / name
        result = runner.invoke(app, ["run", str(mixed_plan_file), *SMALL, "--engine", name, "--out", str(out)])
        assert result.exit_code == 0, result.output
        runs[name] = torch.load(out / "checkpoint.pt", weights_only=True)
    embedded, flower = runs["embedded"]["global_state"], runs["flower"]["global_state"]
    assert set(embedded) == set(flower)
    for key in embedded:
        assert torch.allclose(embedded[key], flower[key], rtol=0, atol=ATOL), key
    history = {name: json.loads(run["history"]) for name, run in runs.items()}
    for a, b in zip(history["embedded"], history["flower"]):
        assert (a["sampled"], a["accuracy"]) == (b["sampled"], b["accuracy"])
        assert [t["client"] for t in a["trained"]] == [t["client"] for t in b["trained"]]
    trained_classes = {t["class"] for r in history["flower"] for t in r["trained"]}
    assert trained_classes == {"weak", "lora", "head"}  # every kind of upload took part


def test_missing_extra_and_unknown_engine_are_one_line(mixed_plan_file, tmp_path, monkeypatch):
    monkeypatch.setattr(engine, "flower_extra_installed", lambda: False)
    result = runner.invoke(app, ["run", str(mixed_plan_file), *SMALL, "--engine", "flower", "--out", str(tmp_path / "r")])
    assert_one_line_error(result, "the flower engine needs the extra: pip install 'budgetplan[flower]'")
    result = runner.invoke(app, ["run", str(mixed_plan_file), *SMALL, "--engine", "spark", "--out", str(tmp_path / "s")])
    assert_one_line_error(result, "--engine spark", "embedded, flower")


# ---- the Flower trainer and the loop's aggregate on hand-built replies -----------------------------------------------------------------
# A synthetic model: two "blocks", a head and an embedding no class trains. Classes: "full" trains block 1
# and the head, "lora" adapts block 0 (rank 2) and trains the head, "head" trains the head only.

A_KEY, B_KEY = "blk.0.lora_A.default.weight", "blk.0.lora_B.default.weight"
SCALING = 2.0  # lora_alpha_per_rank: the adapter adds SCALING * B @ A to blk.0.weight


def _global():
    g = torch.Generator().manual_seed(0)
    shapes = {"embed.weight": (5, 3), "blk.0.weight": (4, 3), "blk.1.weight": (4, 3), "head.bias": (2,)}
    return {k: torch.randn(s, generator=g) for k, s in shapes.items()}


def _plan() -> Plan:
    def cls(name, keys):
        return PlanClass(name=name, share=1 / 3, block_states=("frozen", "trained"), trainable_names=keys,
                         lora_alpha_per_rank=SCALING)
    classes = (cls("full", ("blk.1.weight", "head.bias")), cls("lora", (A_KEY, B_KEY, "head.bias")),
               cls("head", ("head.bias",)))
    return Plan(model=ModelRef(name="synthetic", fingerprint="sha256:synthetic", num_blocks=2),
                context=PlanContext(task="classification", num_labels=2, batch_size=4, seq_len=8), classes=classes)


class FakeGrid(AnsweringGrid):
    """The two Grid calls the trainer makes; nodes answer the identity query from a table and a training
    message with their upload from another."""

    def __init__(self, identities: dict[int, tuple[str, int, str]], uploads=None, counts=None):
        self.identities = identities  # node id -> (device class, partition id, model fingerprint)
        self.uploads, self.counts = uploads or {}, counts or {}  # node id -> upload / num_examples
        self.sent = []  # training messages, as sent

    def get_node_ids(self):
        return list(self.identities)

    def answer(self, messages):
        from flwr.app import ConfigRecord, Message, RecordDict
        from budgetplan.integrations.flower import records as rec

        replies = []
        for message in messages:
            node = message.metadata.dst_node_id
            if message.metadata.message_type == "train":
                self.sent.append(message)
                if node in self.uploads:
                    content = RecordDict({rec.ARRAYS: rec.to_arrays(self.uploads[node]),
                                          rec.METRICS: rec.to_metrics(self.counts[node], {})})
                    replies.append(Message(content, reply_to=message))
                continue
            device_class, partition, fingerprint = self.identities[node]
            answer = ConfigRecord({rec.DEVICE_CLASS: device_class, rec.PARTITION_ID: partition,
                                   rec.MODEL_FINGERPRINT: fingerprint})
            replies.append(Message(RecordDict({rec.IDENTITY: answer}), reply_to=message))
        return replies


def _upload(keys, seed):
    g = torch.Generator().manual_seed(seed)
    shapes = {**{k: tuple(v.shape) for k, v in _global().items()}, A_KEY: (2, 3), B_KEY: (4, 2)}
    return {k: torch.randn(shapes[k], generator=g) for k in keys}


def _one_round(identities, uploads, counts):
    """Identify, train every identified node and aggregate one round; uploads/counts by node id.

    Returns (trained infos, dropped infos, new state, the fake grid)."""
    from budgetplan.execute.client import TrainSettings
    from budgetplan.execute.loop import Job, aggregate
    from budgetplan.integrations.flower.trainer import FlowerTrainer

    from flwr.supercore.task_identity import TaskIdentity

    for name in ("task_id", "run_id", "node_id"):  # a ServerApp sets these; Message() reads them
        if getattr(TaskIdentity, "_" + name) is None:
            setattr(TaskIdentity, name, 1)
    plan, grid = _plan(), FakeGrid(identities, uploads, counts)
    trainer = FlowerTrainer(grid, plan, min_nodes=len(identities), reply_timeout_s=1.0)
    class_of = trainer.available(None, 1)
    jobs = [Job(client, plan.by_name(name), TrainSettings(), 0) for client, name in sorted(class_of.items())]
    replies = trainer.train(None, _global(), 1, jobs, lambda client: None)
    new, trained, dropped = aggregate(plan, _global(), replies, frozenset())
    return trained, dropped, new, grid


def _numpy_average(tensors, weights):
    return np.average(np.stack([t.numpy().astype(np.float64) for t in tensors]), axis=0, weights=weights)


def test_strategy_aggregate_is_numpy_average_over_the_nodes_that_sent_each_key():
    pytest.importorskip("flwr")
    fp = _plan().model.fingerprint
    identities = {11: ("full", 0, fp), 12: ("full", 1, fp), 13: ("lora", 2, fp), 14: ("head", 3, fp)}
    keys = {11: ("blk.1.weight", "head.bias"), 12: ("blk.1.weight", "head.bias"), 13: (A_KEY, B_KEY, "head.bias"),
            14: ("head.bias",)}
    uploads = {node: _upload(k, seed=node) for node, k in keys.items()}
    counts = {11: 10, 12: 30, 13: 5, 14: 20}
    _, _, new, grid = _one_round(identities, uploads, counts)
    assert len(grid.sent) == 4  # one plan slice per node
    start = _global()
    lora_weight = start["blk.0.weight"] + SCALING * uploads[13][B_KEY] @ uploads[13][A_KEY]  # node 13's effective weight
    expected = {
        "blk.1.weight": _numpy_average([uploads[11]["blk.1.weight"], uploads[12]["blk.1.weight"]], [10, 30]),
        "blk.0.weight": _numpy_average([lora_weight], [5]),
        "head.bias": _numpy_average([uploads[n]["head.bias"] for n in (11, 12, 13, 14)], [10, 30, 5, 20]),
    }
    for key, value in expected.items():
        np.testing.assert_allclose(new[key].numpy(), value.astype(np.float32), rtol=1e-6, atol=1e-6)
    assert torch.equal(new["embed.weight"], start["embed.weight"])  # sent by nobody: kept


def test_bad_nodes_and_replies_are_one_log_line_each_and_the_round_goes_on(caplog):
    pytest.importorskip("flwr")
    fp = _plan().model.fingerprint
    identities = {21: ("tablet", 0, fp), 22: ("full", 1, "sha256:other-model"), 23: ("full", 2, fp),
                  24: ("head", 3, fp)}
    uploads = {23: _upload(("blk.1.weight", "head.bias"), 23), 24: _upload(("head.bias", "blk.1.weight"), 24)}
    with caplog.at_level(logging.WARNING, logger="flwr"):
        trained, dropped, new, _ = _one_round(identities, uploads, {23: 8, 24: 8})
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("budgetplan:")]
    assert all("\n" not in line for line in lines)
    for node, words in ((21, "device class 'tablet' is not in the plan"), (22, "runs model sha256:other-model"),
                        (24, "1 unexpected (e.g. blk.1.weight)")):
        matching = [line for line in lines if f"node {node}" in line]
        assert len(matching) == 1 and words in matching[0], lines
    assert not [line for line in lines if "node 23" in line]
    assert [t.client for t in trained] == [2]  # node 23 only
    assert [d.client for d in dropped] == [3] and "unexpected" in dropped[0].reason  # node 24
    assert torch.equal(new["head.bias"], uploads[23]["head.bias"])
    assert torch.equal(new["blk.1.weight"], uploads[23]["blk.1.weight"])


# ---- (d) the exported app -------------------------------------------------------------------------------

def test_export_writes_an_app_whose_config_round_trips_and_whose_modules_import(mixed_plan_file, tmp_path):
    pytest.importorskip("flwr")
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp
    from budgetplan.integrations.flower.export import PACKAGE
    from budgetplan.integrations.flower.settings import run_config_from_values

    out = tmp_path / "app"
    result = runner.invoke(app, ["export", "--format", "flower", str(mixed_plan_file), str(out), "--data",
                                 "drugreview", "--rounds", "2", "--clients", "3", "--local-steps", "2",
                                 "--max-train", "80", "--seq-len", "16", "--lr", "0.001", "--lora-lr-scale", "3",
                                 "--head-lr-scale", "10"])
    assert result.exit_code == 0, result.output
    assert "start-local.sh" in result.output and "flwr run" in result.output and "budgetplan-local" in result.output
    project = tomllib.loads((out / "pyproject.toml").read_text())["tool"]["flwr"]["app"]
    assert project["components"] == {"serverapp": f"{PACKAGE}.server_app:app",
                                     "clientapp": f"{PACKAGE}.client_app:app"}
    config = run_config_from_values(project["config"])
    assert (config.data, config.rounds, config.clients, config.train.local_steps, config.train.lr,
            config.max_train, config.seq_len) == ("drugreview", 2, 3, 2, 0.001, 80, 16)
    assert (config.train.lora_lr_scale, config.train.head_lr_scale) == (3.0, 10.0)
    old_app = {k: v for k, v in project["config"].items() if not k.endswith("lr-scale")}  # an app written before
    old_train = run_config_from_values(old_app).train
    assert (old_train.lora_lr_scale, old_train.head_lr_scale) == (1.0, 1.0)
    apps = {name: _import(out / PACKAGE / f"{name}.py").app for name in ("server_app", "client_app")}
    assert isinstance(apps["server_app"], ServerApp) and isinstance(apps["client_app"], ClientApp)


def _import(path):
    spec = importlib.util.spec_from_file_location(f"exported_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- the exported ServerApp: errors are one log line and a failed run, resume needs a run dir ---------------

def test_exported_server_app_errors_are_one_line_without_traceback(mixed_plan_file, tmp_path, caplog):
    pytest.importorskip("flwr")
    from budgetplan.integrations.flower import server
    from budgetplan.integrations.flower.settings import RESUME, RUN_DIR, run_config_values
    from fl_helpers import tiny_config

    values = run_config_values(tiny_config(rounds=1, clients=2, clients_per_round=2))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "checkpoint.pt").write_bytes(b"")
    server.make_server_app(mixed_plan_file)  # installs the filter on Flower's logger
    flower_logger = logging.getLogger("flwr")
    cases = [({**values, RUN_DIR: str(run_dir)}, "already holds a run; continue it with --run-config 'resume=true'"),
             ({**values, RESUME: True, RUN_DIR: ""}, "resume=true needs a run-dir"),
             ({**values, "lr": "fast"}, "wrong type")]
    for config, words in cases:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="flwr"), pytest.raises(server.DeployedRunError) as info:
            server.main(None, config, mixed_plan_file)
        lines = [r.getMessage() for r in caplog.records if "budgetplan: error:" in r.getMessage()]
        assert len(lines) == 1 and words in lines[0] and "\n" not in lines[0], lines
        assert info.value.exit_code != 0 and words in str(info.value)
        caplog.clear()
        flower_logger.error("ServerApp raised an exception", exc_info=info.value)  # as flwr-serverapp logs it
        assert "Traceback" not in caplog.text and caplog.records[-1].exc_info is None


def test_a_deployed_run_refuses_a_run_dir_another_run_owns(mixed_plan_file, tmp_path, caplog):
    """The exported ServerApp takes the run-dir lock the embedded engine takes: a second run is one line naming
    the owner, and leaves the owner's run dir as it was."""
    pytest.importorskip("flwr")
    import os

    from budgetplan.execute import rundir
    from budgetplan.integrations.flower import server
    from budgetplan.integrations.flower.settings import RUN_DIR, run_config_values
    from fl_helpers import tiny_config

    values = {**run_config_values(tiny_config(rounds=1, clients=2, clients_per_round=2)), RUN_DIR: str(tmp_path)}
    with rundir.locked(tmp_path):  # as a running `budgetplan run --out tmp_path` (or another deployed run) holds it
        before = sorted(p.name for p in tmp_path.iterdir())
        with caplog.at_level(logging.INFO, logger="flwr"), pytest.raises(server.DeployedRunError) as info:
            server.main(None, values, mixed_plan_file)
        assert sorted(p.name for p in tmp_path.iterdir()) == before
    lines = [r.getMessage() for r in caplog.records if "budgetplan: error:" in r.getMessage()]
    assert len(lines) == 1 and "is in use by" in lines[0] and f"pid {os.getpid()}" in lines[0], lines
    assert "in use" in str(info.value)


def test_training_messages_carry_only_what_changed_since_the_base_and_nodes_rebuild_the_rest(tmp_path):
    """Server: with base_state a message holds only the tensors that differ from it, plus its digest. Node:
    those tensors over its own base give back the server's global state exactly; another base is refused."""
    pytest.importorskip("flwr")
    from budgetplan.execute import rounds
    from budgetplan.execute.client import TrainSettings, global_state_of
    from budgetplan.execute.loop import Job
    from budgetplan.integrations.flower import client, records as rec
    from budgetplan.integrations.flower.trainer import FlowerTrainer
    from budgetplan.errors import PlanError
    from fl_helpers import flower_task_identity, tiny_config

    plan = tiny_plan(class_plan("weak", 1.0, LAST_ONE))
    setup = rounds.prepare(plan, tiny_config(rounds=1, clients=2, clients_per_round=2, max_train=8, max_test=4))
    base = global_state_of(setup.template)
    changed = sorted(plan.classes[0].trainable_names)[:3]
    state = {k: (v + 1 if k in changed else v.clone()) for k, v in base.items()}
    grid = FakeGrid({11: ("weak", 0, plan.model.fingerprint)})
    with flower_task_identity():
        trainer = FlowerTrainer(grid, plan, min_nodes=1, reply_timeout_s=0.5, base_state=base)
        trainer.available(None, 1)
        trainer.train(None, state, 1, [Job(0, plan.classes[0], TrainSettings(), 0)], lambda c: None)
    (message,) = grid.sent
    sent = rec.to_state(message.content.array_records[rec.ARRAYS])
    assert sorted(sent) == changed and len(base) > len(changed)
    digest = message.content.config_records[rec.CONFIG][rec.BASE_DIGEST]
    assert digest == rec.state_digest(base) != rec.state_digest(state)
    rebuilt = client._global_state(setup, sent, digest)
    assert set(rebuilt) == set(state) and all(torch.equal(rebuilt[k], state[k]) for k in state)
    with pytest.raises(PlanError, match="initial weights .* differ from the server's"):
        client._global_state(setup, sent, rec.state_digest(state))
    assert client._global_state(setup, sent, None) is sent  # no digest: the message holds the whole state
