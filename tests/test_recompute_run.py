"""The whole loop with +recompute states: profile -> solve (with and without) -> run -> verify, on tiny-bert."""

from __future__ import annotations

import itertools
import json

import pytest
from typer.testing import CliRunner

from budgetplan.cli import app
from budgetplan.cli.solve_cmd import BUNDLED_PROFILE
from budgetplan.profile.compose import FROZEN, compose
from budgetplan.profile.io import write_profile
from budgetplan.profile.profiler import ProfileRequest, profile_model
from budgetplan.profile.types import TRAINED, is_recompute, is_trainable, recompute_state
from fl_helpers import tiny_bert

runner = CliRunner()
SMALL = ["--rounds", "1", "--clients", "2", "--local-steps", "1", "--max-train", "40", "--max-test", "8",
         "--seq-len", "16"]


@pytest.fixture(scope="module")
def profile_file(tmp_path_factory):
    profile = profile_model(tiny_bert(), ProfileRequest(batch_size=4, seq_len=16, lora_ranks=(4,),
                                                        measure_configs=False))
    path = tmp_path_factory.mktemp("recompute") / "profile.json"
    write_profile(profile, path)
    return profile, path


def device_file(tmp_path, memory_bytes: int):
    """jetson-nano's file renamed, with the given memory budget and compute and uplink to spare."""
    text = (BUNDLED_PROFILE.parents[3] / "profiles" / "jetson-nano.toml").read_text()
    changes = {"memory_bytes": memory_bytes, "total_memory_bytes": memory_bytes}
    lines = [f"{line.split(' =')[0]} = {changes[line.split(' =')[0]]}" if line.split(" =")[0] in changes else line
             for line in text.splitlines()]
    path = tmp_path / "tight.toml"
    path.write_text("\n".join(lines).replace('name = "jetson-nano"', 'name = "tight"') + "\n")
    return path


def solve(tmp_path, profile_path, device, *extra):
    out = tmp_path / f"plan{len(extra)}.json"
    result = runner.invoke(app, ["solve", "--profile", str(profile_path), "--device-file", str(device),
                                 *extra, "--json", str(out)])
    assert result.exit_code == 0, result.output
    return out, json.loads(out.read_text())["classes"]["tight"]


def test_memory_bound_class_trains_more_blocks_with_recompute_and_verify_passes(profile_file, tmp_path):
    profile, path = profile_file
    # The least memory that trains every block when any of them may recompute: below full training's peak.
    choices = [(TRAINED, recompute_state(TRAINED))] * profile.num_blocks
    least = min(compose(profile, states).peak_bytes_predicted for states in itertools.product(*choices))
    plain_full = compose(profile, (TRAINED,) * profile.num_blocks).peak_bytes_predicted
    assert least < plain_full
    device = device_file(tmp_path, least)
    plan_path, entry = solve(tmp_path, path, device)
    _, plain = solve(tmp_path, path, device, "--no-recompute")
    trained = lambda e: sum(is_trainable(s) for s in e["block_states"]) if e["active"] else 0  # noqa: E731
    assert trained(entry) == profile.num_blocks > trained(plain)
    assert any(is_recompute(s) for s in entry["block_states"]) and entry["recompute"]["blocks"]
    assert not any(is_recompute(s) for s in plain["block_states"]) if plain["active"] else True
    assert entry["predicted"]["peak_bytes"] <= least

    out = tmp_path / "run"
    result = runner.invoke(app, ["run", str(plan_path), "--data", "drugreview", *SMALL, "--out", str(out)])
    assert result.exit_code == 0, result.output
    verified = runner.invoke(app, ["verify", str(out), "--json"])
    assert verified.exit_code == 0, verified.output
    check = json.loads(verified.output)["classes"][0]
    assert check["status"] == "PASS", check["reasons"]
    assert check["measured_flops"] == check["predicted_flops"]  # the re-run forward is in both
    assert abs(check["peak_error"]) <= 0.03


def test_frozen_everywhere_is_never_recomputed(profile_file):
    profile, _ = profile_file
    assert compose(profile, (FROZEN,) * profile.num_blocks).block_states == ("frozen_outside",) * profile.num_blocks
