"""Shared by the bad-input tests: a real profile and plan of tiny-bert, and what every refusal must look like."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from typer.testing import CliRunner

from budgetplan.cli import app
from budgetplan.profile.io import profile_to_dict
from budgetplan.profile.profiler import ProfileRequest, profile_model
from cli_helpers import assert_one_line_error
from fl_helpers import tiny_bert

runner = CliRunner()
DEVICES = ["-d", "jetson-nano", "-d", "raspberry-pi-4-4gb"]


def refused(result, *words: str) -> None:
    """Non-zero exit, exactly one line holding every word, no traceback and no 'internal error'."""
    assert_one_line_error(result, *words)
    assert "internal error" not in result.output, result.output


def snapshot(path: Path) -> dict:
    """Every file under path with its content hash."""
    if not path.exists():
        return {}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def make_plan_files(root: Path) -> Path:
    """root/profile.json (tiny-bert, batch 4, seq 16, LoRA 4) and root/plan.json solved from it for two devices."""
    profile = profile_model(tiny_bert(), ProfileRequest(batch_size=4, seq_len=16, lora_ranks=(4,),
                                                        measure_configs=False))
    (root / "profile.json").write_text(json.dumps(profile_to_dict(profile)))
    result = runner.invoke(app, ["solve", "-p", str(root / "profile.json"), *DEVICES, "--model-spec", "tiny-bert",
                                 "--json", str(root / "plan.json")])
    assert result.exit_code == 0, result.output
    return root
