"""Bad run options, damaged run directories and checkpoints, poisoned training, two runs on one directory.

Refusals assert a non-zero exit, one line, no 'internal error', and nothing written (no run directory, or an
existing one byte-for-byte unchanged).
"""

from __future__ import annotations

import json
import math
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from bad_input_helpers import make_plan_files, refused, runner, snapshot
from budgetplan.cli import app
from budgetplan.execute.finite import non_finite_reason

SMALL = ["--rounds", "2", "--clients", "4", "--clients-per-round", "2", "--local-steps", "1", "--max-train", "40",
         "--max-test", "8", "--seq-len", "16", "--no-measure"]


def run_args(plan: Path, out: Path, *extra: str, measure: bool = False) -> list[str]:
    small = [a for a in SMALL if a != "--no-measure"] if measure else SMALL
    return ["run", str(plan), "--data", "drugreview", *small, "--out", str(out), *extra]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The plan files and one finished two-round run directory (measured, so verify has numbers)."""
    root = make_plan_files(tmp_path_factory.mktemp("bad-runs"))
    result = runner.invoke(app, run_args(root / "plan.json", root / "run", measure=True))
    assert result.exit_code == 0, result.output
    return root


RUN_OPTIONS = {
    "--lr -1": (["--lr", "-1"], "--lr"),
    "--lr 0": (["--lr", "0"], "--lr"),
    "--lr nan": (["--lr", "nan"], "--lr"),
    "--lr inf": (["--lr", "inf"], "--lr"),
    "--seq-len 0": (["--seq-len", "0"], "--seq-len"),
    "--seq-len 100000": (["--seq-len", "100000"], "positions"),
    "--batch-size 0": (["--batch-size", "0"], "--batch-size"),
    "--clients 0": (["--clients", "0"], "--clients"),
    "--clients-per-round 0": (["--clients-per-round", "0"], "--clients-per-round"),
    "--rounds 0": (["--rounds", "0"], "--rounds"),
    "--local-steps 0": (["--local-steps", "0"], "--local-steps"),
    "--alpha nan": (["--alpha", "nan"], "--alpha"),
    "--alpha 0": (["--alpha", "0"], "--alpha"),
    "--client-timeout-s nan": (["--client-timeout-s", "nan"], "--client-timeout-s"),
    "--client-timeout-s -1": (["--client-timeout-s", "-1"], "--client-timeout-s"),
    "--max-train 0": (["--max-train", "0"], "--max-train"),
    "--max-test 0": (["--max-test", "0"], "--max-test"),
    "--fail-prob 1": (["--fail-prob", "1"], "--fail-prob"),
    "--fail-prob nan": (["--fail-prob", "nan"], "--fail-prob"),
    "--seed -1": (["--seed", "-1"], "--seed"),
}


@pytest.mark.parametrize("case", RUN_OPTIONS)
def test_run_refuses_a_bad_option_before_any_work(files, tmp_path, case):
    extra, word = RUN_OPTIONS[case]
    out = tmp_path / "run"
    refused(runner.invoke(app, run_args(files / "plan.json", out, *extra)), word)
    assert not out.exists()


OTHER_OPTIONS = {
    "verify --tolerance nan": (["verify", "RUN", "--tolerance", "nan"], "--tolerance"),
    "verify --tolerance -1": (["verify", "RUN", "--tolerance", "-1"], "--tolerance"),
    "verify --tolerance inf": (["verify", "RUN", "--tolerance", "inf"], "--tolerance"),
    "profile --num-labels 0": (["profile", "tiny-bert", "--num-labels", "0"], "--num-labels"),
    "profile --num-labels 1": (["profile", "tiny-bert", "--num-labels", "1"], "--num-labels"),
    "profile --batch-size 0": (["profile", "tiny-bert", "--batch-size", "0"], "--batch-size"),
    "profile --seq-len 0": (["profile", "tiny-bert", "--seq-len", "0"], "--seq-len"),
    "profile --seq-len 100000": (["profile", "tiny-bert", "--seq-len", "100000"], "positions"),
    "profile --lora-ranks 0": (["profile", "tiny-bert", "--lora-ranks", "4,0"], "--lora-rank"),
    "solve --time-limit nan": (["solve", "-p", "PROFILE", "-d", "jetson-nano", "--time-limit", "nan"], "--time-limit"),
    "solve --time-limit 0": (["solve", "-p", "PROFILE", "-d", "jetson-nano", "--time-limit", "0"], "--time-limit"),
    "solve --workers 0": (["solve", "-p", "PROFILE", "-d", "jetson-nano", "--workers", "0"], "--workers"),
}


@pytest.mark.parametrize("case", OTHER_OPTIONS)
def test_other_commands_refuse_bad_options(files, tmp_path, case):
    args, word = OTHER_OPTIONS[case]
    args = [str(files / "run") if a == "RUN" else str(files / "profile.json") if a == "PROFILE" else a for a in args]
    before = snapshot(files / "run")
    out = tmp_path / "out.json"
    with_json = args if args[0] == "verify" else [*args, "--json", str(out)]
    refused(runner.invoke(app, with_json), word)
    assert not out.exists() and snapshot(files / "run") == before


class Payload:  # a class torch's weights_only loader refuses to unpickle
    pass


def _checkpoint(change):
    def mutate(run: Path) -> None:
        path = run / "checkpoint.pt"
        change(path)
    return mutate


RESUME_MUTATIONS = {
    "truncated checkpoint": (_checkpoint(lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
                             "truncated"),
    "empty checkpoint": (_checkpoint(lambda p: p.write_bytes(b"")), "empty"),
    "text checkpoint": (_checkpoint(lambda p: p.write_text("not a checkpoint")), "checkpoint"),
    "pickled checkpoint": (_checkpoint(lambda p: torch.save({"round": 1, "x": Payload()}, p)), "pickled"),
    "plain pickle": (_checkpoint(lambda p: p.write_bytes(pickle.dumps({"round": 1}))), "checkpoint"),
    "checkpoint of another shape": (_checkpoint(lambda p: torch.save({"round": 1}, p)),
                                    "not a budgetplan checkpoint"),
    "checkpoint deleted": (_checkpoint(lambda p: p.unlink()), "checkpoint"),
    "run.json not JSON": (lambda run: (run / "run.json").write_text("{"), "run.json"),
    "run.json a list": (lambda run: (run / "run.json").write_text("[]"), "run.json"),
    "run.json lacks the plan": (lambda run: (run / "run.json").write_text('{"config": {}, "model": ""}'), "plan"),
    "run.json deleted": (lambda run: (run / "run.json").unlink(), "run.json"),
}


@pytest.mark.parametrize("case", RESUME_MUTATIONS)
def test_resume_refuses_a_damaged_run_directory_and_changes_nothing(files, tmp_path, case):
    mutate, word = RESUME_MUTATIONS[case]
    run = tmp_path / "run"
    shutil.copytree(files / "run", run)
    mutate(run)
    before = snapshot(run)
    refused(runner.invoke(app, run_args(files / "plan.json", run, "--resume", measure=True)), word)
    assert snapshot(run) == before


VERIFY_MUTATIONS = {
    "measurements not JSON": (lambda run: (run / "measurements.json").write_text("{"), "measurements"),
    "measurements a list": (lambda run: (run / "measurements.json").write_text("[1]"), "measurements"),
    "peak is a string": (lambda run: _edit_measurements(run, "peak_bytes", "12"), "peak_bytes"),
    "negative upload": (lambda run: _edit_measurements(run, "upload_bytes", -1), "upload_bytes"),
    "FLOPs missing": (lambda run: _edit_measurements(run, "flops_forward", None), "flops_forward"),
    "NaN in measurements": (lambda run: (run / "measurements.json").write_text('{"a": {"peak_bytes": NaN}}'), "NaN"),
    "plan without classes": (lambda run: _edit_plan(run, lambda d: d.update(classes={})), "classes"),
    "plan.json not JSON": (lambda run: (run / "plan.json").write_text("nope"), "plan"),
}


def _edit_measurements(run: Path, key: str, value) -> None:
    data = json.loads((run / "measurements.json").read_text())
    for entry in data.values():
        entry[key] = value
    (run / "measurements.json").write_text(json.dumps(data))


def _edit_plan(run: Path, change) -> None:
    data = json.loads((run / "plan.json").read_text())
    change(data)
    (run / "plan.json").write_text(json.dumps(data))


@pytest.mark.parametrize("case", VERIFY_MUTATIONS)
def test_verify_refuses_a_damaged_run_directory(files, tmp_path, case):
    mutate, word = VERIFY_MUTATIONS[case]
    run = tmp_path / "run"
    shutil.copytree(files / "run", run)
    mutate(run)
    before = snapshot(run)
    refused(runner.invoke(app, ["verify", str(run)]), word)
    assert snapshot(run) == before


def test_a_non_finite_update_or_loss_is_named():
    finite = {"w": torch.ones(2)}
    assert non_finite_reason(finite, {"loss_first": 1.0, "loss_last": 0.5}) is None
    assert "non-finite loss" in non_finite_reason(finite, {"loss_last": math.nan})
    assert "w" in non_finite_reason({"w": torch.tensor([1.0, math.inf])}, {"loss_last": 0.1})
    assert non_finite_reason({"ids": torch.tensor([1, 2])}, {}) is None  # integer tensors are always finite


def test_diverging_clients_are_dropped_and_the_global_model_stays_finite(files, tmp_path):
    """--lr 1e30 is a valid option whose training overflows: those clients are dropped, never averaged."""
    out = tmp_path / "run"
    result = runner.invoke(app, run_args(files / "plan.json", out, "--lr", "1e30", "--local-steps", "2"))
    assert result.exit_code == 0, result.output
    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    dropped = [d for r in rounds for d in r["dropped"]]
    assert dropped and all("non-finite" in d["reason"] for d in dropped), rounds
    assert all(not r["trained"] for r in rounds)  # every client diverged
    assert "non-finite" in result.output  # the round line says why clients were dropped
    state = torch.load(out / "checkpoint.pt", weights_only=True)["global_state"]
    assert all(torch.isfinite(t).all() for t in state.values())
