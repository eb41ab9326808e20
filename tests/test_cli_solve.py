"""`budgetplan solve / devices / plan` through typer's CliRunner: the headline table, the plan file, one-line errors."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from budgetplan.cli import app
from budgetplan.plan import validate_plan
from budgetplan.profile.compose import compose
from budgetplan.profile.io import read_profile
from budgetplan.cli.solve_cmd import BUNDLED_PROFILE
from cli_helpers import assert_one_line_error

runner = CliRunner()
JETSON = ["solve", "--device", "jetson-nano"]


def write_device(tmp_path, **changes):
    text = (BUNDLED_PROFILE.parents[3] / "profiles" / "jetson-nano.toml").read_text()
    for key, value in changes.items():
        lines = [f"{key} = {value}" if line.startswith(f"{key} =") else line for line in text.splitlines()]
        text = "\n".join(lines) + "\n"
    path = tmp_path / "mine.toml"
    path.write_text(text.replace('name = "jetson-nano"', 'name = "mine"'))
    return path


def test_solve_jetson_nano_prints_table_and_writes_valid_plan(tmp_path):
    out = tmp_path / "plan.json"
    result = runner.invoke(app, [*JETSON, "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "jetson-nano" in result.output and "OPTIMAL" in result.output
    plan = validate_plan(json.loads(out.read_text()))
    entry = plan["classes"]["jetson-nano"]
    profile = read_profile(BUNDLED_PROFILE)
    assert entry["predicted"]["peak_bytes"] == compose(profile, tuple(entry["block_states"])).peak_bytes_predicted
    assert entry["predicted"]["peak_bytes"] <= entry["budget"]["memory_bytes"]
    assert plan["model"]["fingerprint"] == profile.model.fingerprint

    shown = runner.invoke(app, ["plan", "show", str(out)])
    assert shown.exit_code == 0 and "jetson-nano" in shown.output
    valid = runner.invoke(app, ["plan", "validate", str(out)])
    assert valid.exit_code == 0 and "valid plan" in valid.output


def test_memory_bound_device_trains_fewer_blocks(tmp_path):
    profile = read_profile(BUNDLED_PROFILE)
    last_two = compose(profile, ("frozen_outside",) * 4 + ("trained",) * 2).peak_bytes_predicted
    out = tmp_path / "plan.json"
    result = runner.invoke(app, ["solve", "--device-file", str(write_device(tmp_path, memory_bytes=last_two)),
                                 "--contiguous", "--json", str(out)])
    assert result.exit_code == 0, result.output
    entry = json.loads(out.read_text())["classes"]["mine"]
    assert entry["block_states"] == ["frozen_outside"] * 4 + ["trained"] * 2
    assert entry["binding"] == "memory"


def test_unknown_device_lists_known_ones():
    assert_one_line_error(runner.invoke(app, ["solve", "--device", "pager"]), "unknown device 'pager'", "jetson-nano")


def test_malformed_device_toml_names_file_and_line(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\nmemory_bytes = = 3\n')
    assert_one_line_error(runner.invoke(app, ["solve", "--device-file", str(path)]), str(path), "line 2")


def test_zero_and_negative_budgets_are_refused(tmp_path):
    assert_one_line_error(runner.invoke(app, ["solve", "--device-file", str(write_device(tmp_path, memory_bytes=0))]),
                   "memory_bytes", "> 0")
    assert_one_line_error(runner.invoke(app, ["solve", "--device-file", str(write_device(tmp_path, flops_per_s=-1))]),
                   "flops_per_s", "> 0")


def test_profile_of_another_schema_version(tmp_path):
    data = json.loads(BUNDLED_PROFILE.read_text())
    data["schema_version"] = "9.0"
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(data))
    assert_one_line_error(runner.invoke(app, [*JETSON, "--profile", str(path)]), "schema version 9.0", "budgetplan profile")


def test_infeasible_budget_names_class_budget_and_least_need(tmp_path):
    profile = read_profile(BUNDLED_PROFILE)
    head_only = compose(profile, ("frozen_outside",) * profile.num_blocks).peak_bytes_predicted
    device = str(write_device(tmp_path, memory_bytes=head_only - 1))
    result = runner.invoke(app, ["solve", "--device-file", device, "--no-quantized"])
    assert_one_line_error(result, "mine:", "head only", f"{head_only / 2**20:.2f} MiB ({head_only:,} bytes)",
                          f"({head_only - 1:,} bytes)", "memory_bytes")
    # with frozen weights in int8 the same budget trains the head over an int8 body
    fits = runner.invoke(app, ["solve", "--device-file", device])
    assert fits.exit_code == 0 and "int8" in fits.output, fits.output


def test_devices_list_show_and_missing_name():
    listed = runner.invoke(app, ["devices", "list"])
    assert listed.exit_code == 0 and "raspberry-pi-4-4gb" in listed.output
    shown = runner.invoke(app, ["devices", "show", "jetson-nano"])
    assert shown.exit_code == 0 and "datasheet" in shown.output
    assert_one_line_error(runner.invoke(app, ["devices", "show", "toaster"]), "unknown device 'toaster'")


def test_plan_validate_refuses_other_model_and_other_version(tmp_path):
    out = tmp_path / "plan.json"
    assert runner.invoke(app, [*JETSON, "--json", str(out)]).exit_code == 0
    assert_one_line_error(runner.invoke(app, ["plan", "validate", str(out), "--model", "tiny-bert"]),
                   "solve a plan for this model")
    data = json.loads(out.read_text())
    data["schema_version"] = "3.0"
    out.write_text(json.dumps(data))
    assert_one_line_error(runner.invoke(app, ["plan", "validate", str(out)]), "schema version 3.0")
    assert_one_line_error(runner.invoke(app, ["plan", "show", str(tmp_path / "none.json")]), "does not exist")


def test_fleet_chooses_one_model_and_keeps_shares(tmp_path, tiny_profiles):
    from budgetplan.profile.io import write_profile

    tiny = tmp_path / "tiny.json"
    write_profile(tiny_profiles["tiny-bert"][1], tiny)
    fleet = BUNDLED_PROFILE.parents[3] / "profiles" / "fleets" / "mixed-edge.toml"
    out = tmp_path / "plan.json"
    result = runner.invoke(app, ["solve", "--fleet", str(fleet), "--profile", str(tiny), "--profile", "bundled:minilm",
                                 "--json", str(out)])
    assert result.exit_code == 0, result.output
    plan = validate_plan(json.loads(out.read_text()))
    scores = {c["model"]: c["score"] for c in plan["fleet"]["candidates"]}
    assert set(scores) == {"tiny-bert", "all-minilm-l6-v2"}
    assert plan["model"]["name"] == max(scores, key=scores.get)
    assert abs(sum(c["share"] for c in plan["classes"].values()) - 1) < 1e-9
    assert plan["classes"]["raspberry-pi-4-4gb"]["share"] == 0.15


def test_fleet_and_device_together_is_refused():
    fleet = BUNDLED_PROFILE.parents[3] / "profiles" / "fleets" / "demo.toml"
    assert_one_line_error(runner.invoke(app, ["solve", "--fleet", str(fleet), "--device", "jetson-nano"]),
                          "--fleet names its own device classes")
