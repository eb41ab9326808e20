"""Plan JSON: built from a solve, valid against its schema, read back by the executor, refused when wrong."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest

from budgetplan.devices import NUMBER_FIELDS, DeviceClass
from budgetplan.errors import PlanError
from budgetplan.execute.plans import read_run_plan
from budgetplan.execute.setup import upload_keys_for
from budgetplan.plan import PlannedClass, SolverSettings, build_plan, check_model, read_plan, validate_plan, write_plan
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
    planned = [PlannedClass(solve_device(profile, d), d, share) for d, share in zip(devices, (0.75, 0.25))]
    return loaded, profile, build_plan(profile, planned, SETTINGS, model_spec="tiny-bert")


def test_plan_validates_and_its_names_are_what_the_executor_trains(bert_plan):
    loaded, profile, plan = bert_plan
    validate_plan(plan)
    for name, entry in plan["classes"].items():
        states = tuple(entry["block_states"])
        assert sorted(entry["trainable_parameter_names"]) == sorted(upload_keys_for(loaded, states)), name
        cost = compose(profile, states)
        assert entry["predicted"]["peak_bytes"] == cost.peak_bytes_predicted <= entry["budget"]["memory_bytes"]
        assert entry["slack"]["memory_bytes"] == entry["budget"]["memory_bytes"] - cost.peak_bytes_predicted
        assert entry["predicted"]["source"] == "derived"
    assert plan["model"]["fingerprint"] == loaded.fingerprint
    assert plan["aggregation"]["rule"] == "layerwise-weighted-mean"


def test_small_class_trains_less_than_large(bert_plan):
    _, _, plan = bert_plan
    small, large = plan["classes"]["small"], plan["classes"]["large"]
    assert small["predicted"]["peak_bytes"] < large["predicted"]["peak_bytes"]
    assert large["block_states"] == ["trained"] * 4  # everything fits: full fine-tuning is the best plan


def test_lora_spec_names_ranks_alpha_and_targets(tiny_profiles):
    _, profile, _ = tiny_profiles["tiny-bert"]
    d = device("lora-only", 10**12)
    states = ("frozen_outside", "lora-4", "lora-4", "trained")
    planned = PlannedClass(dataclasses.replace(solve_device(profile, d), block_states=states), d, 1.0)
    entry = build_plan(profile, [planned], SETTINGS)["classes"]["lora-only"]
    assert entry["lora"]["ranks"] == {"1": 4, "2": 4}
    assert entry["lora"]["alpha"] == {"1": 8.0, "2": 8.0}
    assert entry["lora"]["target_modules"] == list(profile.context.lora_targets)
    assert all("lora_" in n for n in entry["upload_keys"] if ".layer.1." in n or ".layer.2." in n)


def test_executor_reads_the_plan(bert_plan, tmp_path):
    _, _, plan = bert_plan
    path = tmp_path / "plan.json"
    write_plan(plan, path)
    run_plan = read_run_plan(path)
    assert run_plan.model == "tiny-bert" and run_plan.fingerprint == plan["model"]["fingerprint"]
    for c in run_plan.classes:
        entry = plan["classes"][c.name]
        assert list(c.block_states) == entry["block_states"] and list(c.upload_keys) == entry["upload_keys"]
        assert c.memory_budget_bytes == entry["budget"]["memory_bytes"]
        assert c.predicted_peak_bytes == entry["predicted"]["peak_bytes"]
        assert c.predicted_flops == entry["predicted"]["flops_forward"] + entry["predicted"]["flops_backward"]
        assert c.flops_budget == entry["budget"]["flops_per_step"]


@pytest.mark.parametrize("corrupt, words", [
    (lambda p: p.update(schema_version="2.0"), ["schema version 2.0", "1.x"]),
    (lambda p: p.pop("aggregation"), ["'aggregation' is a required property"]),
    (lambda p: p["classes"]["small"].pop("upload_keys"), ["upload_keys", "classes/small"]),
    (lambda p: p["classes"]["small"]["predicted"].update(peak_bytes=-1), ["peak_bytes"]),
    (lambda p: p.update(kind="something-else"), ["not a budgetplan plan"]),
])
def test_validation_refuses_in_one_line(bert_plan, tmp_path, corrupt, words):
    plan = copy.deepcopy(bert_plan[2])
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
        check_model(plan, other.fingerprint, "tiny-gpt2")
    check_model(plan, bert_plan[0].fingerprint, "tiny-bert")


def test_inactive_class_is_valid_and_sits_out_in_the_executor(bert_plan, tmp_path):
    _, profile, plan = bert_plan
    d = device("tiny", 1000)
    plan = build_plan(profile, [PlannedClass(None, d, 1.0, "tiny: needs more memory")], SETTINGS, "tiny-bert")
    path = tmp_path / "plan.json"
    write_plan(plan, path)
    (c,) = read_run_plan(path).classes
    assert not c.active and c.upload_keys == ()
