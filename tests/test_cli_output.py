"""The CLI's surface: --version, one example per help, escaped brackets, `--json -`, your own device folders,
multi-device solve with a class that sits out (exit code 3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

import budgetplan
from budgetplan.cli import app
from budgetplan.cli.solve_cmd import EXIT_SAT_OUT
from budgetplan.devices import DEVICES_DIR_ENV, device_to_toml, load_device
from cli_helpers import assert_one_line_error

runner = CliRunner()
# this checkout's budgetplan in a subprocess started elsewhere
WIDE = {"COLUMNS": "200"}  # help on one line per sentence
SOURCE_ENV = {**os.environ, "PYTHONPATH": str(Path(budgetplan.__file__).resolve().parents[1])}


def command_paths(group: click.Group, prefix=()) -> list[tuple[str, ...]]:
    paths = []
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            paths += command_paths(command, (*prefix, name))
        else:
            paths.append((*prefix, name))
    return paths


COMMANDS = command_paths(typer.main.get_command(app))


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"budgetplan {budgetplan.__version__}"


def group_paths(group: click.Group, prefix=()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            paths += group_paths(command, (*prefix, name))
    return paths


GROUPS = group_paths(typer.main.get_command(app))  # the root and the `devices` / `plan` groups


@pytest.mark.parametrize("path", COMMANDS + GROUPS, ids=lambda p: " ".join(p) or "budgetplan")
def test_every_help_ends_with_one_example(path):
    result = runner.invoke(app, [*path, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    examples = [line for line in result.output.splitlines() if "Example: budgetplan " in line]
    assert len(examples) == 1, result.output
    assert " ".join(path) in examples[0]
    last = [line.strip() for line in result.output.splitlines() if line.strip()][-1]
    assert last == examples[0].strip(), result.output  # after the options, not at the top


def test_help_paragraphs_are_whole():
    """A docstring hard-wrapped in the source reads as one paragraph: no line break in mid-sentence."""
    text = runner.invoke(app, ["solve", "--help"], env=WIDE).output
    assert "the plan covers the other classes, and the exit code is 3" in text, text


def test_profile_help_says_what_model_may_be_and_names_the_bundled_models():
    from budgetplan.models.bundled import bundled_names

    text = " ".join(runner.invoke(app, ["profile", "--help"], env=WIDE).output.split())
    assert "MODEL:" in text and "Hugging Face model directory" in text and "--trust-pickle" in text, text
    assert all(name in text for name in bundled_names()), text


def test_devices_list_names_the_bundled_fleets():
    from budgetplan.devices import bundled_fleets

    result = runner.invoke(app, ["devices", "list"])
    line = next(line for line in result.output.splitlines() if line.startswith("bundled fleets"))
    assert bundled_fleets() and all(f"{name} (" in line for name in bundled_fleets()), line
    assert "raspberry-pi-zero-2w 40%" in line  # the demo fleet's classes with their shares


def test_the_bundled_demo_fleet_plans_every_class_at_the_demo_sizes(tmp_path):
    from budgetplan.cli.demo_cmd import DEMO_FLEET, DEMO_SEQ_LEN
    from budgetplan.solve import read_fleet

    result = runner.invoke(app, ["solve", "--fleet", "demo", "--json", str(tmp_path / "plan.json")])
    assert result.exit_code == 0, result.output
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert (plan["context"]["batch_size"], plan["context"]["seq_len"]) == (8, DEMO_SEQ_LEN)
    fleet = {c.device.name for c in read_fleet(DEMO_FLEET).classes}
    assert set(plan["classes"]) == fleet and all(c["active"] for c in plan["classes"].values()), plan["classes"]


def test_brackets_in_help_are_shown():
    run = runner.invoke(app, ["run", "--help"], env=WIDE).output
    compare = runner.invoke(app, ["compare", "--help"], env=WIDE).output
    assert "budgetplan[flower]" in run and "budgetplan[plot]" in compare


def test_devices_dir_option_and_env_var_are_in_help_and_searched_first(tmp_path, monkeypatch):
    assert DEVICES_DIR_ENV in runner.invoke(app, ["solve", "--help"], env=WIDE).output
    mine = device_to_toml(load_device("jetson-nano")).replace('memory_bytes = 2147483648', 'memory_bytes = 1073741824')
    (tmp_path / "jetson-nano.toml").write_text(mine)  # replaces the bundled class of the same name
    (tmp_path / "my-board.toml").write_text(mine.replace('"jetson-nano"', '"my-board"'))
    listed = runner.invoke(app, ["devices", "list", "--devices-dir", str(tmp_path)]).output
    row = next(line for line in listed.splitlines() if line.startswith("jetson-nano "))
    assert "1024.0" in row and str(tmp_path) in row and "my-board" in listed and "android-midrange" in listed
    monkeypatch.setenv(DEVICES_DIR_ENV, str(tmp_path))
    assert "1024.0 MiB" in runner.invoke(app, ["devices", "show", "my-board"]).output
    monkeypatch.setenv(DEVICES_DIR_ENV, str(tmp_path / "nope"))
    assert_one_line_error(runner.invoke(app, ["devices", "list"]), "nope is not a directory")


def test_solve_json_dash_prints_only_the_plan_on_stdout():
    result = runner.invoke(app, ["solve", "--device", "jetson-nano", "--json", "-"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)  # the whole of stdout is one JSON document
    assert plan["kind"] == "budgetplan-plan" and "jetson-nano" in plan["classes"]
    assert "jetson-nano" in result.stderr  # the table went to stderr


def test_profile_json_dash_in_a_real_pipe(tmp_path):
    done = subprocess.run([sys.executable, "-m", "budgetplan", "profile", "tiny-bert", "--batch-size", "2",
                           "--seq-len", "8", "--lora-ranks", "", "--no-measure", "--json", "-"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path, env=SOURCE_ENV)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["kind"] == "budgetplan-profile"
    assert "tiny-bert" in done.stderr and not (tmp_path / "-").exists()


def test_a_class_that_fits_nothing_sits_out_and_the_others_get_a_plan(tmp_path):
    out = tmp_path / "plan.json"
    # --no-quantized: with frozen weights in int8 the Pi Zero trains the head on the bundled profile
    result = runner.invoke(app, ["solve", "--device", "jetson-nano", "--device", "raspberry-pi-zero-2w",
                                 "--no-quantized", "--json", str(out)])
    assert result.exit_code == EXIT_SAT_OUT == 3, result.output
    plan = json.loads(out.read_text())
    assert plan["classes"]["jetson-nano"]["active"] is True
    zero = plan["classes"]["raspberry-pi-zero-2w"]
    assert zero["active"] is False and "needs" in zero["reason"] and "memory_bytes" in zero["reason"]
    row = next(line for line in result.output.splitlines() if line.startswith("raspberry-pi-zero-2w"))
    assert "sits out" in row and "MiB" in row
    assert "exit code 3" in result.output
    assert "the exit code is 3" in runner.invoke(app, ["solve", "--help"], env=WIDE).output


def test_no_class_fits_is_still_an_error():
    result = runner.invoke(app, ["solve", "--device", "raspberry-pi-zero-2w", "--no-quantized"])
    assert_one_line_error(result, "raspberry-pi-zero-2w", "needs")
    assert result.exit_code == 2


def test_bundled_fleet_by_name():
    result = runner.invoke(app, ["solve", "--fleet", "mixed-edge"])
    assert result.exit_code in (0, EXIT_SAT_OUT), result.output
    assert "Fleet mixed-edge" in result.output
