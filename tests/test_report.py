"""Every table reads whole at 80 columns and when redirected, and every command uses one unit convention."""

from __future__ import annotations

import io
import json
import re
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from budgetplan.cli import app
from budgetplan.plan import read_plan
from budgetplan.execute.records import DroppedClient, read_rounds
from budgetplan.devices import BUNDLED_DIR, device_to_toml, list_devices, load_device
from budgetplan.report import device_report, profile_report, run_report, solve_report
from budgetplan.report.tables import ReportConsole, plain
from budgetplan.report.units import mib, number
from budgetplan.verify import verify_run

runner = CliRunner()
LONG = "jetson-orin-nano-8gb-with-a-rather-long-class-name-for-the-fold-test"
SMALL = ["--rounds", "1", "--clients", "4", "--local-steps", "1", "--max-train", "60", "--max-test", "12",
         "--seq-len", "16"]
# units budgetplan prints: MiB for bytes, GFLOP for work (GFLOP/s for rates), Mbit/s for uplinks
FOREIGN_UNITS = re.compile(r"\b(MB|GB|kB|KB|TB|TFLOPs?|MFLOPs?|kFLOPs?|GFLOPs|GB/s|MB/s|bytes/s)\b")


def render(table, terminal: bool) -> str:
    out = io.StringIO()
    console = ReportConsole(file=out, width=80, force_terminal=terminal, color_system=None)
    console.print(table, crop=False)  # uncropped: a table wider than 80 columns shows as a longer line
    return out.getvalue()


@pytest.fixture(scope="module")
def devices_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("boards")
    text = device_to_toml(load_device("raspberry-pi-zero-2w")).replace('"raspberry-pi-zero-2w"', f'"{LONG}"')
    (folder / f"{LONG}.toml").write_text(text)
    return folder


@pytest.fixture(scope="module")
def plans(devices_dir, tmp_path_factory):
    """A multi-device plan with a class that sits out (long name), and a fleet plan."""
    folder = tmp_path_factory.mktemp("plans")
    devices = runner.invoke(app, ["solve", "--devices-dir", str(devices_dir), "--device", "jetson-orin-nano-8gb",
                                  "--device", LONG, "--json", str(folder / "devices.json")])
    fleet = runner.invoke(app, ["solve", "--fleet", "demo", "--json", str(folder / "fleet.json")])
    assert devices.exit_code == 3 and fleet.exit_code in (0, 3), devices.output + fleet.output
    return {name: read_plan(folder / f"{name}.json") for name in ("devices", "fleet")}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from fl_helpers import tiny_plan

    folder = tmp_path_factory.mktemp("run")
    (folder / "plan.json").write_text(json.dumps(tiny_plan().to_dict()))
    result = runner.invoke(app, ["run", str(folder / "plan.json"), "--data", "drugreview", *SMALL,
                                 "--out", str(folder / "run")])
    assert result.exit_code == 0, result.output
    return folder / "run"


def all_tables(plans, run_dir, tiny_profiles, devices_dir):
    history = read_rounds(run_dir / "rounds.jsonl")
    dropped = [replace(history[0], dropped=(DroppedClient(3, LONG, "trained longer than --client-timeout-s 0.5 s"),))]
    rows = [{"scheme": "(a) budgetplan", "final_accuracy": (0.61234, 0.0123), "best_accuracy": (0.62, 0.01),
             "rounds_to_target": [3, None], "peak_per_class": f"{LONG} 155.2, android-midrange 281.4",
             "gflops_per_round": (1234.5678, 12.3), "upload_mib_per_round": (40.6, 0.0), "participation": 0.75}]
    return {
        "devices": device_report.devices_table(list_devices([devices_dir]), BUNDLED_DIR),
        **{f"device {d.name}": device_report.device_table(d) for d in list_devices([devices_dir])},
        "plan (devices)": solve_report.plan_table(plans["devices"]),
        "plan (fleet)": solve_report.plan_table(plans["fleet"]),
        "fleet": solve_report.fleet_table(plans["fleet"].fleet),
        **{f"profile {k}": profile_report.profile_table(v[1]) for k, v in tiny_profiles.items()},
        "rounds": run_report.rounds_table(history),
        "dropped": run_report.dropped_table(dropped),
        "verify": run_report.verify_table(verify_run(run_dir)),
        "compare": run_report.compare_table(rows, 0.6),
    }


def test_every_table_is_whole_at_80_columns_and_redirected(plans, run_dir, tiny_profiles, devices_dir):
    for name, table in all_tables(plans, run_dir, tiny_profiles, devices_dir).items():
        cells = [plain(cell) for column in table.columns for cell in column.cells]
        in_terminal, redirected = render(table, terminal=True), render(table, terminal=False)
        assert "…" not in in_terminal, (name, in_terminal)
        assert max(len(line) for line in in_terminal.splitlines()) <= 80, (name, in_terminal)
        assert "…" not in redirected, (name, redirected)
        lines = redirected.splitlines()
        for row in zip(*[[plain(cell) for cell in column.cells] for column in table.columns]):
            # one line per row holding every cell whole, so grep finds whole rows
            assert any(all(cell in line for cell in row) for line in lines), (name, row, redirected)
        assert cells, name


def test_grep_finds_a_long_device_name_in_redirected_output(devices_dir):
    result = runner.invoke(app, ["devices", "list", "--devices-dir", str(devices_dir)])
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if LONG in line)
    assert str(devices_dir) in row and "160.0" in row


def test_units_are_uniform_across_commands(plans, run_dir):
    """The same budget reads the same everywhere (MiB), work is GFLOP, and no other unit appears."""
    outputs = {
        "devices list": runner.invoke(app, ["devices", "list"]).output,
        "solve": runner.invoke(app, ["solve", "--device", "raspberry-pi-4-4gb", "--device", "jetson-nano"]).output,
        "verify": runner.invoke(app, ["verify", str(run_dir)]).output,
        "help": runner.invoke(app, ["solve", "--help"]).output,
    }
    for name, text in outputs.items():
        assert not FOREIGN_UNITS.search(text), (name, FOREIGN_UNITS.search(text), text)
    # devices show: descriptions and sources quote datasheets ("512 MB LPDDR2"); budgetplan's own values do not
    values = [plain(c) for c in device_report.device_table(load_device("raspberry-pi-zero-2w")).columns[1].cells]
    assert "160.0 MiB" in values and not any(FOREIGN_UNITS.search(v) for v in values)
    pi4 = load_device("raspberry-pi-4-4gb")
    budget = mib(pi4.memory_bytes)
    assert budget == number(pi4.memory_bytes / 2**20) == "2560.0"
    pi4_row = next(line for line in outputs["devices list"].splitlines() if line.startswith("raspberry-pi-4-4gb"))
    assert f" {budget} " in pi4_row
    solve_row = next(line for line in outputs["solve"].splitlines() if line.startswith("raspberry-pi-4-4gb"))
    assert f"of {budget}" in solve_row
    headers = " ".join(plain(c.header) for c in solve_report.plan_table(plans["devices"]).columns)
    assert "MiB" in headers and "GFLOP" in headers
    verify = run_report.verify_table(verify_run(run_dir))
    assert all(("MiB" in h) or ("GFLOP" in h) or not re.search(r"peak|budget|upload|FLOP", h)
               for h in (plain(c.header) for c in verify.columns))
