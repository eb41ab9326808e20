"""Bad input, continued (tests/test_bad_input.py's helpers): a file of another budgetplan kind given to a command,
importance weights that are not finite numbers, the physical bounds every reader applies, and an export where
Flower is not installed. Every refusal: exit 2, one line naming the file and what to do, nothing written."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

from bad_input_helpers import DEVICES, make_plan_files, refused, runner, snapshot
from budgetplan.cli import app
from budgetplan.devices import BUNDLED_DIR, FLEETS_DIR, list_devices
from budgetplan.errors import PlanError
from budgetplan.models.load import load_model, save_model_file
from budgetplan.profile.io import BUNDLED_PROFILE_PATH, read_profile
from budgetplan.validate import UNIT_BOUNDS, check_magnitudes, magnitude_problem, unit_of


@pytest.fixture(scope="module")
def kinds(tmp_path_factory):
    """One file (or directory) of every kind budgetplan writes, by name."""
    root = make_plan_files(tmp_path_factory.mktemp("kinds"))
    shutil.copy(BUNDLED_DIR / "jetson-nano.toml", root / "device.toml")
    shutil.copy(FLEETS_DIR / "demo.toml", root / "fleet.toml")
    (root / "weights.toml").write_text("weights = [1.0, 1.0, 1.0, 1.0]\n")
    save_model_file(load_model("tiny-bert"), root / "model.pt")
    (root / "run").mkdir()
    shutil.copy(root / "plan.json", root / "run" / "plan.json")
    (root / "run" / "run.json").write_text("{}\n")
    return root


OUT = "out"  # every command's output path, under the test's own tmp_path: it must not appear
SMALL_RUN = ["--data", "drugreview", "--rounds", "1", "--out"]
# (argv with {given} for the wrong file and {out} for an output, the file given, what the line must say it is)
WRONG_KIND = {
    "verify a plan": (["verify", "{given}"], "plan.json", "is a budgetplan plan"),
    "verify a profile": (["verify", "{given}"], "profile.json", "is a budgetplan profile"),
    "verify a model": (["verify", "{given}"], "model.pt", "is a torch file"),
    "run a profile": (["run", "{given}", *SMALL_RUN, "{out}"], "profile.json", "is a budgetplan profile"),
    "run a run dir": (["run", "{given}", *SMALL_RUN, "{out}"], "run", "is a run directory"),
    "export a profile": (["export", "{given}", "{out}", "--format", "flower", "--data", "drugreview"], "profile.json",
                         "is a budgetplan profile"),
    "plan show a profile": (["plan", "show", "{given}"], "profile.json", "is a budgetplan profile"),
    "plan validate a device": (["plan", "validate", "{given}"], "device.toml", "is a device file"),
    "solve a plan as profile": (["solve", "-p", "{given}", *DEVICES, "--json", "{out}"], "plan.json",
                                "is a budgetplan plan"),
    "solve a model as profile": (["solve", "-p", "{given}", *DEVICES, "--json", "{out}"], "model.pt",
                                 "is a torch file"),
    "solve a fleet as device": (["solve", "-p", "PROFILE", "--device-file", "{given}", "--json", "{out}"],
                                "fleet.toml", "is a fleet file"),
    "solve a device as fleet": (["solve", "--fleet", "{given}", "--json", "{out}"], "device.toml", "is a device file"),
    "solve a plan as importance": (["solve", "-p", "PROFILE", *DEVICES, "--objective", "importance", "--importance",
                                    "{given}", "--json", "{out}"], "plan.json", "is a budgetplan plan"),
    "solve importance as fleet": (["solve", "--fleet", "{given}", "--json", "{out}"], "weights.toml",
                                  "is an importance weights file"),
    "devices show a plan": (["devices", "show", "x", "--device-file", "{given}"], "plan.json", "is a budgetplan plan"),
    "profile a plan": (["profile", "{given}", "--json", "{out}", "--no-measure"], "plan.json", "is a budgetplan plan"),
    "profile a run dir": (["profile", "{given}", "--json", "{out}", "--no-measure"], "run", "is a run directory"),
    "profile a device": (["profile", "{given}", "--json", "{out}", "--no-measure"], "device.toml", "is a device file"),
    "importance with a plan": (["importance", "tiny-bert", "--profile", "{given}", "--data", "drugreview", "--out",
                                "{out}"], "plan.json", "is a budgetplan plan"),
    "compare with a plan as profile": (["compare", "PLAN", "--profile", "{given}", "--data", "drugreview", "--out",
                                        "{out}"], "plan.json", "is a budgetplan plan"),
}
# What each kind's line names as the command that takes it.
TAKER = {"plan.json": "'budgetplan run'", "profile.json": "'budgetplan solve --profile'",
         "model.pt": "'budgetplan profile'", "run": "'budgetplan verify'", "device.toml": "'budgetplan solve --device-file'",
         "fleet.toml": "'budgetplan solve --fleet'", "weights.toml": "'budgetplan solve --importance'"}


@pytest.mark.parametrize("case", WRONG_KIND)
def test_a_file_of_another_kind_is_named_with_the_command_that_takes_it(kinds, tmp_path, case):
    argv, given, kind = WRONG_KIND[case]
    out = tmp_path / OUT
    fill = {"{given}": str(kinds / given), "{out}": str(out), "PROFILE": str(kinds / "profile.json"),
            "PLAN": str(kinds / "plan.json")}
    before = snapshot(kinds)
    result = runner.invoke(app, [fill.get(a, a) for a in argv])
    refused(result, str(kinds / given), kind, TAKER[given])
    assert result.exit_code == 2 and not out.exists() and snapshot(kinds) == before


def test_a_truncated_file_of_the_right_kind_says_it_ends_early(kinds, tmp_path):
    path = tmp_path / "plan.json"
    path.write_text((kinds / "plan.json").read_text()[:400])
    refused(runner.invoke(app, ["plan", "validate", str(path)]), str(path), "not valid JSON", "truncated?")


IMPORTANCE = {
    "NaN": ("weights = [nan, 1, 1, 1]\n", "weights/0 = nan is not finite"),
    "inf": ("weights = [1, inf, 1, 1]\n", "weights/1 = inf is not finite"),
    "huge": ("weights = [1, 1, 1e300, 1]\n", "weights/2 = 1e+300 is more than"),
    "a string": ('weights = [1, 1, 1, "x"]\n', "weights/3 = 'x' is not a number"),
    "all zero": ("weights = [0, 0, 0, 0]\n", "all 0"),
    "no weights": ("other = 1\n", "no list 'weights'"),
}


@pytest.mark.parametrize("case", IMPORTANCE)
def test_solve_refuses_bad_importance_weights(kinds, tmp_path, case):
    text, words = IMPORTANCE[case]
    path = tmp_path / "weights.toml"
    path.write_text(text)
    out = tmp_path / "plan.json"
    result = runner.invoke(app, ["solve", "-p", str(kinds / "profile.json"), *DEVICES, "--objective", "importance",
                                 "--importance", str(path), "--json", str(out)])
    refused(result, words, "weights")
    assert result.exit_code == 2 and not out.exists()
    if case != "all zero":
        assert str(path) in result.output


def test_export_refuses_where_flower_is_not_installed(kinds, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "flwr" else real(name, *a))
    out = tmp_path / "app"
    result = runner.invoke(app, ["export", str(kinds / "plan.json"), str(out), "--format", "flower",
                                 "--data", "drugreview"])
    refused(result, "Flower is not installed", "pip install 'budgetplan[flower]'")
    assert result.exit_code == 2 and not out.exists()


# ---- the physical bounds, read off field names ------------------------------------------------------------------

@pytest.mark.parametrize("name, unit", [
    ("activation_bytes", "bytes"), ("peak_bytes_predicted", "bytes"), ("held_other_bytes", "bytes"),
    ("flops_per_s", "FLOP/s"), ("uplink_bits_per_s", "bit/s"), ("flops_forward", "FLOPs"), ("flops_per_round", "FLOPs"),
    ("round_deadline_s", "seconds"), ("part_seconds", "seconds"), ("trainable_params", "params"),
    ("weights", "weight"), ("importance", "weight"), ("share", None), ("batch_size", None),
    ("base.encoder.layer.0.output.dense.weight", None), ("lora-4", None), ("importance.block.0", None)])
def test_the_unit_of_a_number_is_read_off_its_field_name(name, unit):
    assert unit_of(name) == unit


@pytest.mark.parametrize("path", [("resident_bytes",), ("held_shared_bytes", 0, "base.embeddings.weight"),
                                  ("held_shared_bytes", 0, "weight"), ("classes", "x_s", "predicted", "peak_bytes")])
def test_a_bound_holds_up_to_its_value_and_the_nearest_unit_named_in_the_path_sets_it(path):
    bound = UNIT_BOUNDS["bytes"][0]  # every path above ends in bytes, whatever the tensor or class is called
    assert magnitude_problem(path, bound) is None and magnitude_problem(path, -bound) is None
    assert "more than 1 PiB" in magnitude_problem(path, bound + 1)
    nested = 2**60
    for key in reversed(path):  # the number inside a document at `path` (an int key: a list index)
        nested = [nested] if isinstance(key, int) else {key: nested}
    where = "/".join(map(str, path))
    with pytest.raises(PlanError, match=rf"^f: {where} = {2**60} is more than 1 PiB .*; fix$"):
        check_magnitudes({"ok_bytes": 1, "n": [0.5], **nested}, "f", "fix")


def test_the_bundled_profiles_and_devices_are_within_the_bounds():
    assert read_profile(BUNDLED_PROFILE_PATH).num_blocks > 0
    assert len(list_devices()) >= 5
