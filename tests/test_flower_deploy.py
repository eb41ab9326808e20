"""A real local Flower 1.42 deployment of an exported app: a SuperLink and two SuperNodes of different
classes on 127.0.0.1 (free ports), `flwr run` of the app, final weights compared with the embedded engine;
then one SuperNode killed mid-round and restarted. Every process is stopped at the end, also on failure.

Marked `deploy` (skip locally with -m "not deploy"); CI runs them. Each Flower message starts a fresh
flwr-clientapp process (imports torch and transformers), so a round costs a few seconds even for tiny-bert.
"""

import json
import time
from pathlib import Path

import pytest
import torch

import budgetplan
from budgetplan.execute import rounds
from fl_helpers import LAST_ONE, class_plan, tiny_config, tiny_plan

pytestmark = pytest.mark.deploy
HEAD_ONLY = ("frozen",) * 4
RUN_TIMEOUT_S = 900  # generous: a loaded 2-core machine runs these several times slower than an idle one
# One torch thread in every Flower process, as in the test process (conftest): same summation order.
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(Path(budgetplan.__file__).parents[1])}


@pytest.fixture()
def deployed_app(tmp_path):
    """(plan, config, app dir, run dir): an exported 2-node app, 2 rounds, both classes each round."""
    pytest.importorskip("flwr")
    from budgetplan.integrations.flower.export import export_flower_app

    plan = tiny_plan(class_plan("weak", 0.5, LAST_ONE), class_plan("head", 0.5, HEAD_ONLY))
    config = tiny_config(rounds=2, clients=2, clients_per_round=2, max_train=32, max_test=8, seed=5)
    app, run_dir = tmp_path / "app", tmp_path / "run"
    export_flower_app(plan, config, app, run_dir=run_dir, reply_timeout_s=600, node_wait_s=120)
    return plan, config, app, run_dir


@pytest.fixture()
def federation(deployed_app):
    from budgetplan.integrations.flower.local import start_local

    federation = start_local(deployed_app[2], env=ENV)
    try:
        yield federation
    finally:
        federation.stop()


def _history(run_dir):
    return [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]


def _run(federation, **run_config):
    result = federation.run_app(run_config or None, timeout_s=RUN_TIMEOUT_S)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert federation.run_status(output) == "finished:completed", output[-3000:]
    return output


def test_local_deployment_resumed_ends_with_the_embedded_engines_weights(deployed_app, federation, tmp_path):
    """Round 1, a refused re-run on the same run dir, then round 2 resumed: the embedded engine's weights."""
    plan, config, app, run_dir = deployed_app
    started = time.monotonic()
    _run(federation, **{"num-server-rounds": 1})
    refused = federation.run_app({"num-server-rounds": 2}, timeout_s=RUN_TIMEOUT_S)  # same run-dir, no resume
    again = refused.stdout + refused.stderr
    errors = [line for line in again.splitlines() if "budgetplan: error:" in line]
    assert len(errors) == 1 and "already holds a run" in errors[0] and "Traceback" not in again, again[-3000:]
    assert federation.run_status(again) == "finished:failed"
    _run(federation, **{"num-server-rounds": 2, "resume": True})
    seconds = time.monotonic() - started
    history = _history(run_dir)
    assert [r["round"] for r in history] == [1, 2]
    assert all(r["engine"] == "flower" for r in history)
    assert [{t["class"] for t in r["trained"]} for r in history] == [{"weak", "head"}] * 2
    deployed = torch.load(run_dir / "checkpoint.pt", weights_only=True)["global_state"]
    embedded = rounds.run(plan, config, tmp_path / "embedded").global_state
    assert set(deployed) == set(embedded)
    worst = max(float((deployed[k].double() - embedded[k].double()).abs().max()) for k in embedded)
    assert worst == 0.0, f"largest difference {worst:.3g} after {seconds:.0f} s"
    for a, b in zip(history, _history(tmp_path / "embedded")):
        assert (a["sampled"], a["accuracy"]) == (b["sampled"], b["accuracy"])


def test_a_supernode_killed_mid_round_is_reported_and_its_restart_takes_part_again(deployed_app, federation):
    import subprocess
    import threading

    _, _, app, run_dir = deployed_app
    victim = 1
    run = threading.Thread(target=lambda: results.append(federation.run_app(timeout_s=RUN_TIMEOUT_S)))
    results: list[subprocess.CompletedProcess] = []
    run.start()
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while "Receiving: train message" not in federation.log(f"node-{victim}"):  # round 1 reached it
            assert time.monotonic() < deadline and run.is_alive(), federation.log("superlink")[-2000:]
            time.sleep(0.2)
        federation.stop_node(victim)  # SIGTERM to its process group: the SuperNode and its clientapp
        federation.start_node(victim)  # the same node config; Flower gives it a new node id
    finally:
        run.join(RUN_TIMEOUT_S + 10)
    (result,) = results
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    history = _history(run_dir)
    assert [r["round"] for r in history] == [1, 2], output[-3000:]
    first, last = history
    assert [t["client"] for t in first["trained"]] == [0]
    (dropped,) = first["dropped"]
    assert dropped["client"] == victim and "unavailable" in dropped["reason"], dropped
    assert sorted(t["client"] for t in last["trained"]) == [0, victim]  # the restarted node is back
    lines = [line for line in output.splitlines() if "budgetplan:" in line]
    assert any(f"(client {victim}," in line and "is out: unavailable" in line for line in lines), lines
    assert any("replaces node" in line for line in lines), lines
    assert not any("was not asked" in line for line in lines), lines


def test_exported_app_on_a_prestarted_simulation_superlink_matches_the_embedded_engine(deployed_app, tmp_path):
    """The offline simulation path: `flower-superlink --simulation --disable-runtime-dependency-installation`
    started first, then `flwr run`; virtual nodes take their class from the seeded assignment."""
    from budgetplan.integrations.flower.local import start_local

    plan, config, app, run_dir = deployed_app
    federation = start_local(app, simulation=True, env=ENV)
    try:
        _run(federation)
    finally:
        federation.stop()
    deployed = torch.load(run_dir / "checkpoint.pt", weights_only=True)["global_state"]
    embedded = rounds.run(plan, config, tmp_path / "embedded").global_state
    worst = max(float((deployed[k].double() - embedded[k].double()).abs().max()) for k in embedded)
    assert worst == 0.0, f"largest difference {worst:.3g}"
