"""The warm SuperExec (integrations/flower/deploy/warm.py): a task runs in a forked child with exactly the command
line Flower's own executor would start, and its exit status is the child's."""

import os
import sys
import time

import pytest

pytest.importorskip("flwr")

from flwr.supercore.constant import TaskType  # noqa: E402
from flwr.supercore.superexec.executor import ExecutionSpec  # noqa: E402
from flwr.supercore.superexec.executor import subprocess_executor  # noqa: E402

from budgetplan.integrations.flower.deploy import warm  # noqa: E402


def _spec(task_type=TaskType.CLIENT_APP, **kw):
    base = dict(task_type=task_type, runtime_api_address="127.0.0.1:9100", token="tok", insecure=True,
                root_certificates_path=None, runtime_dependency_install=False, parent_pid=4321,
                suppress_output=False, task_id=7)
    base.update(kw)
    return ExecutionSpec(**base)


@pytest.mark.parametrize("kw", [{}, {"insecure": False, "root_certificates_path": "/ca.pem",
                                     "runtime_dependency_install": True, "parent_pid": None}])
def test_task_argv_is_the_command_flowers_own_executor_starts(monkeypatch, kw):
    started = []
    monkeypatch.setattr(subprocess_executor.subprocess, "Popen", lambda args, **_: started.append(args))
    spec = _spec(**kw)
    subprocess_executor.SubprocessExecutor().launch(spec)
    assert warm.task_argv(spec) == started[0]


def test_entry_points_resolve_to_flowers_commands():
    from flwr.supernode.cli import flwr_clientapp

    assert warm.entry_point("flwr-clientapp") is flwr_clientapp
    with pytest.raises(RuntimeError, match="no 'flwr-nonesuch' command"):
        warm.entry_point("flwr-nonesuch")


def _wait(executor, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while executor.children and time.monotonic() < deadline:
        executor.reconcile()
        time.sleep(0.05)
    assert not executor.children, "a forked task did not end"


@pytest.mark.parametrize("task_type", sorted(warm.FORKED))
def test_a_task_runs_in_a_forked_child_with_its_command_line(monkeypatch, tmp_path, task_type):
    """The child sees the task's argv, runs in another process, and is reaped once it ends."""
    seen = tmp_path / "seen.txt"

    def fake_main():
        seen.write_text(f"{os.getpid()}\n" + "\n".join(sys.argv))
        raise SystemExit(0)

    monkeypatch.setattr(warm, "entry_point", lambda command: fake_main)
    executor = warm.ForkExecutor()
    spec = _spec(task_type)
    assert executor.launch(spec).status == "accepted"
    _wait(executor)
    pid, *argv = seen.read_text().splitlines()
    assert int(pid) != os.getpid() and argv == warm.task_argv(spec)


def test_the_childs_exit_status_is_its_entry_points(monkeypatch):
    statuses = []
    real_waitpid = os.waitpid

    def waitpid(pid, flags):
        done, status = real_waitpid(pid, flags)
        if done:
            statuses.append(os.waitstatus_to_exitcode(status))
        return done, status

    monkeypatch.setattr(warm.os, "waitpid", waitpid)
    executor = warm.ForkExecutor()
    for main in (lambda: sys.exit(3), lambda: 1 / 0, lambda: None):
        monkeypatch.setattr(warm, "entry_point", lambda command, main=main: main)
        executor.launch(_spec())
        _wait(executor)
    assert statuses == [3, 1, 0]  # SystemExit's code; an uncaught exception is 1; returning is 0


def test_other_task_types_start_as_flower_starts_them(monkeypatch):
    started = []
    monkeypatch.setattr(subprocess_executor.subprocess, "Popen", lambda args, **_: started.append(args))
    monkeypatch.setattr(warm.os, "fork", lambda: pytest.fail("a simulation task was forked"))
    warm.ForkExecutor().launch(_spec(TaskType.SIMULATION))
    assert started and started[0][0] == "flwr-simulation"


def test_serve_forks_one_superexec_per_request_in_a_session_of_its_own(tmp_path, monkeypatch):
    """The zygote takes control/NAME.json, forks a SuperExec with its argv (own session, so a process-group
    signal reaches it and its apps only) and records the pid in control/NAME.pid."""
    import json
    import signal

    control, seen = tmp_path / "control", tmp_path / "seen.json"
    control.mkdir()

    def fake_superexec(argv):
        seen.write_text(json.dumps({"argv": argv, "pid": os.getpid(), "sid": os.getsid(0)}))
        raise SystemExit(0)

    monkeypatch.setattr(warm, "preload", lambda: None)
    monkeypatch.setattr(warm, "superexec", fake_superexec)
    zygote = os.fork()
    if zygote == 0:
        try:
            warm.serve(control)
        finally:
            os._exit(1)
    try:
        tmp = control / "node-0.json.tmp"
        tmp.write_text(json.dumps({"argv": ["--insecure", "--runtime-api-address", "127.0.0.1:9"],
                                   "log": str(tmp_path / "node-0-superexec.log")}))
        tmp.replace(control / "node-0.json")
        deadline = time.monotonic() + 30
        while not (seen.exists() and (control / "node-0.pid").exists()) and time.monotonic() < deadline:
            time.sleep(0.05)
        child = json.loads(seen.read_text())
        assert child["argv"] == ["--insecure", "--runtime-api-address", "127.0.0.1:9"]
        assert child["sid"] == child["pid"] != zygote and int((control / "node-0.pid").read_text()) == child["pid"]
        assert not (control / "node-0.json").exists()
    finally:
        os.kill(zygote, signal.SIGKILL)
        os.waitpid(zygote, 0)
