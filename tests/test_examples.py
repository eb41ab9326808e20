"""examples/ run as smoke tests: what a user copies must keep working."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_own_model_example_profiles_solves_and_validates(tmp_path):
    done = subprocess.run([sys.executable, str(EXAMPLES / "own_model.py"), str(tmp_path)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    plan = json.loads((tmp_path / "plan.json").read_text())
    entry = plan["classes"]["my-board"]
    # the example board is too small for plain full fine-tuning: memory must bind
    # (or, with activation recomputation, trade FLOPs for memory: some block frozen or recomputed)
    assert entry["binding"] == "memory" and any(s == "frozen_outside" or s.endswith("+recompute")
                                                for s in entry["block_states"])
    assert entry["predicted"]["peak_bytes"] <= entry["budget"]["memory_bytes"]
    assert "matches" in done.stdout
