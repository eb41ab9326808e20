"""The Plan: built from a solve, valid against its schema, the same after a JSON round trip, refused when wrong;
old 1.0 plan files still load."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest

from budgetplan.devices import NUMBER_FIELDS, DeviceClass
from budgetplan.errors import PlanError
from budgetplan.errors import ConfigError
from budgetplan.execute.setup import trainable_names_of
from budgetplan.plan import (
    Plan,
    SolverSettings,
    build_plan,
    class_from_solution,
    inactive_class,
    read_plan,
    validate_plan,
    write_plan,
)
from budgetplan.profile.compose import compose
from budgetplan.solve import solve_device

SETTINGS = SolverSettings("layers", False, 10.0, 0, 1)


def device(name: str, memory_bytes: int, uplink_bits_per_s: float = 1e9) -> DeviceClass:
    sources = tuple(f"{f}: assumption: test class" for f in NUMBER_FIELDS)
    return DeviceClass(name=name, description="test", memory_bytes=memory_bytes, total_memory_bytes=memory_bytes,
                       flops_per_s=1e12, uplink_bits_per_s=uplink_bits_per_s, round_deadline_s=100,
                       upload_time_budget_s=10, samples_per_round=64, sources=sources)


@pytest.fixture(scope="module")
def bert_plan(tiny_profiles):
    loaded, profile, _ = tiny_profiles["tiny-bert"]
    full = compose(profile, ("trained",) * profile.num_blocks).peak_bytes_predicted
    head = compose(profile, ("frozen_outside",) * profile.num_blocks).peak_bytes_predicted
    devices = [device("small", (head + full) // 2), device("large", full * 2)]
    planned = [class_from_solution(profile, solve_device(profile, d), d, share)
               for d, share in zip(devices, (0.75, 0.25))]
    return loaded, profile, build_plan(profile, planned, SETTINGS, model_spec="tiny-bert")


def test_plan_validates_and_its_names_are_what_the_executor_trains(bert_plan):
    loaded, profile, plan = bert_plan
    data = validate_plan(plan.to_dict())
    for c in plan.classes:
        assert sorted(c.trainable_names) == sorted(trainable_names_of(loaded, c.block_states)), c.name
        cost = compose(profile, c.block_states)
        assert c.predicted.peak_bytes == cost.peak_bytes_predicted <= c.budget.memory_bytes
        assert c.answer.slack_memory_bytes == c.budget.memory_bytes - cost.peak_bytes_predicted
        assert c.predicted.flops_per_step == cost.flops_forward + cost.flops_backward
        entry = data["classes"][c.name]
        assert entry["predicted"]["source"] == "derived" and "upload_keys" not in entry  # names written once
    assert plan.model.fingerprint == loaded.fingerprint
    assert data["aggregation"]["rule"] == "layerwise-weighted-mean"


def test_solver_answer_and_plan_agree(bert_plan):
    _, profile, plan = bert_plan
    for c in plan.classes:
        solution = solve_device(profile, _devices_of(plan)[c.name])
        assert c.block_states == tuple(solution.block_states)
        assert c.predicted.peak_bytes == solution.peak_bytes
        assert c.predicted.flops_per_round == solution.flops_per_round
        assert c.predicted.upload_bytes == solution.upload_bytes_per_round
        assert c.answer.status == solution.status and c.answer.binding == solution.binding


def _devices_of(plan: Plan) -> dict:
    return {c.name: DeviceClass(**{k: tuple(v) if k == "sources" else v for k, v in c.device.items()})
            for c in plan.classes}


def test_small_class_trains_less_than_large(bert_plan):
    _, _, plan = bert_plan
    small, large = plan.by_name("small"), plan.by_name("large")
    assert small.predicted.peak_bytes < large.predicted.peak_bytes
    assert large.block_states == ("trained",) * 4  # everything fits: full fine-tuning is the best plan


def test_lora_spec_names_ranks_alpha_and_targets(tiny_profiles):
    _, profile, _ = tiny_profiles["tiny-bert"]
    d = device("lora-only", 10**12)
    states = ("frozen_outside", "lora-4", "lora-4", "trained")
    planned = class_from_solution(profile, dataclasses.replace(solve_device(profile, d), block_states=states), d, 1.0)
    entry = build_plan(profile, [planned], SETTINGS).to_dict()["classes"]["lora-only"]
    assert entry["lora"]["ranks"] == {"1": 4, "2": 4}
    assert entry["lora"]["alpha"] == {"1": 8.0, "2": 8.0}
    assert entry["lora"]["target_modules"] == list(profile.context.lora_targets)
    names = entry["trainable_parameter_names"]
    assert all("lora_" in n for n in names if ".layer.1." in n or ".layer.2." in n)
    assert any("lora_" in n for n in names)


def test_plan_round_trips_through_its_json(bert_plan, tmp_path):
    _, _, plan = bert_plan
    path = tmp_path / "plan.json"
    write_plan(plan, path)
    again = read_plan(path)
    assert again == plan and again.digest() == plan.digest()
    assert again.model.load_spec == "tiny-bert"


def _as_1_0(data: dict) -> dict:
    """The layout budgetplan wrote as schema 1.0: no label, the trainable names written twice."""
    old = copy.deepcopy(data)
    old["schema_version"] = "1.0"
    old.pop("label")
    for entry in old["classes"].values():
        if entry["active"]:
            entry["upload_keys"] = list(entry["trainable_parameter_names"])
    return old


def test_a_1_0_plan_file_still_loads(bert_plan, tmp_path):
    _, _, plan = bert_plan
    path = tmp_path / "old.json"
    path.write_text(json.dumps(_as_1_0(plan.to_dict())))
    old = read_plan(path)
    assert old.classes == plan.classes and old.model == plan.model and old.context == plan.context
    assert old.digest() == plan.digest()  # the same plan: a run started from either resumes from the other


@pytest.mark.parametrize("corrupt, words", [
    (lambda p: p.update(schema_version="3.0"), ["schema version 3.0", "2.x"]),
    (lambda p: p.pop("model"), ["'model' is a required property"]),
    (lambda p: p["classes"]["small"].pop("trainable_parameter_names"), ["trainable_parameter_names", "classes/small"]),
    (lambda p: p["classes"]["small"]["predicted"].update(peak_bytes=-1), ["peak_bytes"]),
    (lambda p: p.update(kind="something-else"), ["not a budgetplan plan"]),
])
def test_validation_refuses_in_one_line(bert_plan, tmp_path, corrupt, words):
    plan = bert_plan[2].to_dict()
    corrupt(plan)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(plan))
    with pytest.raises(PlanError) as info:
        read_plan(path)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message


def test_plan_for_another_model_is_refused(bert_plan, tiny_profiles):
    _, _, plan = bert_plan
    other = tiny_profiles["tiny-gpt2"][0]
    with pytest.raises(PlanError, match="solve a plan for this model"):
        plan.check_model(other.fingerprint, "tiny-gpt2")
    plan.check_model(bert_plan[0].fingerprint, "tiny-bert")


def test_inactive_class_is_valid_and_sits_out_in_the_executor(bert_plan, tmp_path):
    _, profile, plan = bert_plan
    d = device("tiny", 1000)
    plan = build_plan(profile, [inactive_class(profile, d, 1.0, "tiny: needs more memory")], SETTINGS, "tiny-bert")
    path = tmp_path / "plan.json"
    write_plan(plan, path)
    (c,) = read_plan(path).classes
    assert not c.active and c.trainable_names == () and c.reason == "tiny: needs more memory"


@pytest.mark.parametrize("field, value, words", [
    ("objective", "speed", "unknown objective 'speed'"),
    ("time_limit_s", 0, "time_limit_s = 0"),
    ("workers", 0, "workers = 0"),
])
def test_solver_settings_validate_themselves(field, value, words):
    with pytest.raises(ConfigError, match=words):
        dataclasses.replace(SETTINGS, **{field: value})
