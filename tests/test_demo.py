"""`budgetplan demo`, the README's main command, end to end at a small size: profile -> solve -> run -> verify."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from budgetplan.cli import app
from budgetplan.plan import validate_plan


def test_demo_plans_trains_and_every_class_passes(tmp_path):
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--rounds", "1", "--clients", "8",
                                      "--batch-size", "4", "--seq-len", "16", "--max-train", "40"])
    assert result.exit_code == 0, result.output
    assert "all classes PASS" in result.output
    majority = [line for line in result.output.splitlines() if "majority" in line]
    assert majority and "held-out accuracy" in majority[-1], result.output
    assert "Demo result: held-out accuracy" in result.output  # the final table: accuracy beside each class
    plan = validate_plan(json.loads((tmp_path / "plan.json").read_text()))
    assert set(plan["classes"]) == {"raspberry-pi-zero-2w", "raspberry-pi-4-4gb", "android-midrange", "jetson-nano"}
    assert (tmp_path / "profile.json").is_file() and (tmp_path / "run" / "checkpoint.pt").is_file()
