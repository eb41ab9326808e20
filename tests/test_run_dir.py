"""A run directory under fire: one owner at a time, a full disk, and SIGKILLs at random moments.

The lock and the kills are about processes, so runs here are real processes: forked from the test process (the
imports are done once; a fresh interpreter per run would cost seconds each), each its own pid, flock and
SIGKILL. A tiny model, few rounds, a handful of kills.
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

from bad_input_helpers import make_plan_files, refused, runner, snapshot
from budgetplan.cli import app

RUN = ["--data", "drugreview", "--clients", "4", "--clients-per-round", "2", "--local-steps", "2",
       "--max-train", "40", "--max-test", "8", "--seq-len", "16", "--no-measure", "--seed", "3"]


@pytest.fixture(scope="module")
def plan(tmp_path_factory) -> Path:
    return make_plan_files(tmp_path_factory.mktemp("run-dir")) / "plan.json"


def run_args(plan: Path, out: Path, rounds: int, *extra: str) -> list[str]:
    return ["run", str(plan), *RUN, "--rounds", str(rounds), "--out", str(out), *extra]


def fork_run(args: list[str], stderr: Path, file_limit_bytes: int | None = None) -> int:
    """`budgetplan ARGS` in a forked child process; returns its pid (stdout discarded, stderr to a file)."""
    pid = os.fork()
    if pid:
        _EXITED.pop(pid, None)  # a reused pid is a new child
        return pid
    code = 70
    try:
        sys.stdout = open(os.devnull, "w")
        sys.stderr = open(stderr, "w")
        os.dup2(sys.stdout.fileno(), 1)
        os.dup2(sys.stderr.fileno(), 2)
        if file_limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit_bytes, resource.RLIM_INFINITY))
        app(args, prog_name="budgetplan")
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.stderr.flush()
        os._exit(code)


_EXITED: dict[int, int] = {}  # pid -> exit code of a child already reaped (a pid can be reaped only once)


def _poll(pid: int) -> int | None:
    """The exit code of a finished child, None while it runs. alive() may reap the child first (a run that ends
    before the kill), so the code is remembered: a second waitpid would raise ChildProcessError."""
    if pid not in _EXITED:
        done, status = os.waitpid(pid, os.WNOHANG)
        if not done:
            return None
        _EXITED[pid] = os.waitstatus_to_exitcode(status)
    return _EXITED[pid]


def exit_code(pid: int, timeout_s: float = 300.0) -> int:
    end = time.monotonic() + timeout_s
    while True:
        code = _poll(pid)
        if code is not None:
            return code
        if time.monotonic() > end:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("run timed out")
        time.sleep(0.02)


def alive(pid: int) -> bool:
    return _poll(pid) is None


def wait_for(condition, timeout_s: float = 180.0) -> None:
    end = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


def _locked(out: Path) -> bool:
    lock = out / "run.lock"
    return lock.exists() and lock.stat().st_size > 0


def _rounds(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]


def test_a_second_run_on_a_locked_directory_is_refused_and_the_first_is_intact(plan, tmp_path):
    out = tmp_path / "run"
    first = fork_run(run_args(plan, out, 10), tmp_path / "first.err")
    try:
        wait_for(lambda: _locked(out))
        second = runner.invoke(app, run_args(plan, out, 3, "--seed", "9"))
        overlapped = alive(first)
    finally:
        code = exit_code(first)
    assert code == 0, (tmp_path / "first.err").read_text()
    refused(second, "in use by", f"pid {first}")
    assert overlapped, "the first run ended before the second started; the test proves nothing"
    assert [r["round"] for r in _rounds(out)] == list(range(1, 11))  # each round once, from the first run only
    assert json.loads((out / "run.json").read_text())["config"]["seed"] == 3
    assert not (out / "run.lock").exists()


def test_a_stale_lock_is_reported_and_taken_over(plan, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.lock").write_text(json.dumps({"pid": 2**22 + 17, "host": "gone", "started_utc": "2020"}))
    result = runner.invoke(app, run_args(plan, out, 1))
    assert result.exit_code == 0, result.output
    assert "no longer running" in result.output and f"pid {2**22 + 17}" in result.output
    assert len(_rounds(out)) == 1 and not (out / "run.lock").exists()


def test_a_full_disk_during_a_checkpoint_is_one_line_and_resume_finishes(plan, tmp_path):
    out, err = tmp_path / "run", tmp_path / "full.err"
    code = exit_code(fork_run(run_args(plan, out, 2), err, file_limit_bytes=64 * 1024))  # a checkpoint won't fit
    errors = [line for line in err.read_text().splitlines() if "error" in line]
    assert code != 0 and len(errors) == 1, err.read_text()
    assert errors[0].startswith("error: disk full while writing the round-1 checkpoint in") and "--resume" in errors[0]
    assert "internal error" not in err.read_text()
    assert not (out / "checkpoint.pt").exists() and not list(out.glob("*.tmp"))
    result = runner.invoke(app, run_args(plan, out, 2, "--resume"))
    assert result.exit_code == 0, result.output
    assert [r["round"] for r in _rounds(out)] == [1, 2]


def _without_seconds(data):
    if isinstance(data, dict):
        return {k: _without_seconds(v) for k, v in data.items() if k != "seconds"}
    if isinstance(data, list):
        return [_without_seconds(v) for v in data]
    return data


def test_of_record_sigkill_at_random_moments_then_resume_ends_bit_identical(plan, tmp_path):
    """Kill a run (SIGKILL) at random moments, resume after each, and end where an uninterrupted run ends."""
    rounds, kills_wanted, rng = 4, 4, random.Random(14)
    reference, out, kills = tmp_path / "reference", tmp_path / "killed", 0
    start = time.monotonic()
    assert exit_code(fork_run(run_args(plan, reference, rounds), tmp_path / "reference.err")) == 0
    # Kill moments scale with the machine: a fixed window let a fast machine finish a run before its kill. Delays
    # summing to at most half a whole run leave every killed attempt work still to do.
    longest_delay = (time.monotonic() - start) / (2 * kills_wanted)
    while True:
        resume = ["--resume"] if (out / "checkpoint.pt").exists() else []
        pid = fork_run(run_args(plan, out, rounds, *resume), tmp_path / f"run{kills}.err")
        if kills < kills_wanted:
            wait_for(lambda: _locked(out) or not alive(pid))
            time.sleep(rng.uniform(0.0, longest_delay))
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                kills += 1
                continue
        assert exit_code(pid) == 0, (tmp_path / f"run{kills}.err").read_text()
        break
    assert kills == kills_wanted
    ours = torch.load(out / "checkpoint.pt", weights_only=True)
    theirs = torch.load(reference / "checkpoint.pt", weights_only=True)
    assert ours["round"] == theirs["round"] == rounds
    assert ours["global_state"].keys() == theirs["global_state"].keys()
    assert all(torch.equal(ours["global_state"][k], theirs["global_state"][k]) for k in theirs["global_state"])
    assert _without_seconds(json.loads(ours["history"])) == _without_seconds(json.loads(theirs["history"]))
    assert _without_seconds(_rounds(out)) == _without_seconds(_rounds(reference))  # each round logged once
    assert snapshot(out).keys() == snapshot(reference).keys()  # no lock or temporary file left behind
