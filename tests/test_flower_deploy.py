"""A real local Flower 1.42 deployment of an exported app: a SuperLink and two SuperNodes of different
classes on 127.0.0.1 (free ports), `flwr run` of the app, final weights compared with the embedded engine;
then one SuperNode killed mid-round and restarted. Every process is stopped at the end, also on failure.

The deployment runs as `budgetplan flower-local` starts it by default: TLS on every connection to the SuperLink
(a CA made for the app) and SuperNode authentication (each node's key registered with `flwr supernode
register`); a SuperNode with a key nobody registered is refused. The simulation test keeps the --insecure mode.

Marked `deploy` (skip locally with -m "not deploy"); CI runs them. The two deployment scenarios share one
SuperLink and its two SuperNodes (module scope; each scenario has its own run dir), started as
`budgetplan flower-local` starts them: warm SuperExecs fork each ServerApp/ClientApp process, so a message
does not pay for importing torch and transformers again (warm.py).
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


def _export(root, insecure=False):
    """(plan, config, app dir, run dir): an exported 2-node app, 2 rounds, both classes each round."""
    pytest.importorskip("flwr")
    from budgetplan.integrations.flower.export import export_flower_app

    plan = tiny_plan(class_plan("weak", 0.5, LAST_ONE), class_plan("head", 0.5, HEAD_ONLY))
    config = tiny_config(rounds=2, clients=2, clients_per_round=2, max_train=32, max_test=8, seed=5)
    app, run_dir = root / "app", root / "run"
    export_flower_app(plan, config, app, run_dir=run_dir, reply_timeout_s=600, node_wait_s=120, insecure=insecure)
    return plan, config, app, run_dir


@pytest.fixture(scope="module")
def deployed_app(tmp_path_factory):
    return _export(tmp_path_factory.mktemp("deploy"))


@pytest.fixture(scope="module")
def federation(deployed_app):
    """The SuperLink and both SuperNodes (with their SuperExecs), stopped at the end even after a failure."""
    from budgetplan.integrations.flower.deploy.local import alive, start_local

    federation = start_local(deployed_app[2], env=ENV)
    try:
        yield federation
    finally:
        started = [federation.superlink, federation.zygote, *federation.nodes.values()]
        pids = [p.pid for p in started if p is not None]
        pids += [int(f.read_text()) for f in federation.control_dir.glob("*.pid")]  # the forked SuperExecs
        federation.stop()
        assert not [pid for pid in pids if alive(pid)], "a Flower process outlived stop()"


def _history(run_dir):
    return [json.loads(line) for line in (run_dir / "rounds.jsonl").read_text().splitlines()]


def _run(federation, **run_config):
    """`flwr run` of the app (its exit status 0); the output, for run_statuses."""
    result = federation.run_app(run_config or None, timeout_s=RUN_TIMEOUT_S)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output


def test_exported_app_on_a_prestarted_simulation_superlink_matches_the_embedded_engine(tmp_path):
    """(First in the file, so the deployment below is not running beside it.) The offline simulation path: `flower-superlink --simulation --disable-runtime-dependency-installation`
    started first, then `flwr run`; virtual nodes take their class from the seeded assignment. The one test of
    an app exported with --insecure (plain text on loopback, as its config says)."""
    import tomllib

    from budgetplan.integrations.flower.deploy.local import start_local
    from budgetplan.integrations.flower.export import FEDERATION

    plan, config, app, run_dir = _export(tmp_path, insecure=True)
    federation = start_local(app, simulation=True, env=ENV)
    entry = tomllib.loads((app / ".flwr" / "config.toml").read_text())["superlink"][FEDERATION]
    assert federation.insecure and entry["insecure"] is True and "--insecure" in federation.superlink.args
    try:
        output = _run(federation)
        assert federation.run_status(output) == "finished:completed", output[-3000:]
    finally:
        federation.stop()
    deployed = torch.load(run_dir / "checkpoint.pt", weights_only=True)["global_state"]
    embedded = rounds.run(plan, config, tmp_path / "embedded").global_state
    worst = max(float((deployed[k].double() - embedded[k].double()).abs().max()) for k in embedded)
    assert worst == 0.0, f"largest difference {worst:.3g}"


def test_the_local_deployment_is_tls_with_registered_supernodes(deployed_app, federation):
    import tomllib

    from budgetplan.integrations.flower.export import FEDERATION
    from budgetplan.integrations.flower.registry import read_registry

    app = deployed_app[2]
    assert not federation.insecure
    entry = tomllib.loads((app / ".flwr" / "config.toml").read_text())["superlink"][FEDERATION]
    assert "insecure" not in entry and entry["root-certificates"] == str(federation.certificates.ca_cert)
    superlink = federation.superlink.args
    assert "--insecure" not in superlink and "--enable-supernode-auth" in superlink and "--ssl-certfile" in superlink
    for process in federation.nodes.values():
        assert "--insecure" not in process.args and "--auth-supernode-private-key" in process.args
    registry = read_registry(app / "nodes")  # each node's key in its node file: the ServerApp's registry
    assert sorted(r.partition for r in registry.values()) == [0, 1]
    assert {r.device_class for r in registry.values()} == {"weak", "head"}


def test_a_supernode_with_an_unregistered_key_is_refused(deployed_app, federation, tmp_path):
    """A SuperNode with the app's CA but a key nobody registered: the SuperLink refuses it and it exits."""
    import subprocess

    from budgetplan.integrations.flower.deploy import certs
    from budgetplan.integrations.flower.deploy.local import flower_bin, free_port

    key = tmp_path / "intruder"
    certs.make_node_key(key)
    argv = [flower_bin("flower-supernode"), *federation.node_security(0, key=key),
            "--superlink", f"127.0.0.1:{federation.port}", "--port", str(free_port()), "--node-config",
            str(deployed_app[2] / "nodes" / "node-0.toml"), "--max-retries", "3"]
    intruder = federation._spawn("intruder", argv)
    try:
        code = intruder.wait(timeout=300)
    finally:
        if intruder.poll() is None:
            intruder.kill()
    log = federation.log("intruder")
    assert code != 0, log[-2000:]
    assert "Failed to initialize the connection to the SuperLink" in log, log[-2000:]


def test_local_deployment_resumed_ends_with_the_embedded_engines_weights(deployed_app, federation, tmp_path):
    """Round 1, a refused re-run on the same run dir, then round 2 resumed: the embedded engine's weights."""
    plan, config, app, run_dir = deployed_app
    started = time.monotonic()
    first = _run(federation, **{"num-server-rounds": 1})
    again = _run(federation, **{"num-server-rounds": 2})  # the same run-dir, no resume: refused
    errors = [line for line in again.splitlines() if "budgetplan: error:" in line]
    assert len(errors) == 1 and "already holds a run" in errors[0] and "Traceback" not in again, again[-3000:]
    resumed = _run(federation, **{"num-server-rounds": 2, "resume": True})
    statuses = federation.run_statuses([first, again, resumed])
    assert statuses == ["finished:completed", "finished:failed", "finished:completed"], (statuses, resumed[-3000:])
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


def test_flwr_run_of_the_exported_app_refuses_a_run_dir_another_run_owns(deployed_app, federation):
    """The ServerApp that `flwr run` starts (in its own process) takes the run-dir lock: while this process owns
    the run dir, as a running `budgetplan run --out` would, the deployed run is one ERROR line naming the owner,
    fails, and leaves the run dir as it was."""
    import os

    from budgetplan.execute import rundir

    run_dir = deployed_app[3].with_name("run-locked")
    with rundir.locked(run_dir):
        before = sorted(p.name for p in run_dir.iterdir())
        output = _run(federation, **{"run-dir": str(run_dir)})
        assert sorted(p.name for p in run_dir.iterdir()) == before
    errors = [line for line in output.splitlines() if "budgetplan: error:" in line]
    assert len(errors) == 1 and "is in use by" in errors[0] and f"pid {os.getpid()}" in errors[0], output[-3000:]
    assert "Traceback" not in output and federation.run_status(output) == "finished:failed"


def test_a_supernode_killed_mid_round_is_reported_and_its_restart_takes_part_again(deployed_app, federation):
    import subprocess
    import threading

    run_dir = deployed_app[3].with_name("run-killed")  # the same app and federation, a run dir of its own
    victim = 1
    seen = len(federation.log(f"node-{victim}"))  # the other scenario may have used this node already
    run = threading.Thread(target=lambda: results.append(
        federation.run_app({"run-dir": str(run_dir)}, timeout_s=RUN_TIMEOUT_S)))
    results: list[subprocess.CompletedProcess] = []
    run.start()
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while "Receiving: train message" not in federation.log(f"node-{victim}")[seen:]:  # round 1 reached it
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
    # the restarted node authenticates with its registered key again: the SuperLink gives it its old node id back
    assert any("replaces node" in line or (f"(client {victim}," in line and "is back" in line) for line in lines), lines
    assert not any("was not asked" in line for line in lines), lines
