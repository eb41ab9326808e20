"""verify: measured first local steps against the plan, and a real profile -> plan -> run -> verify loop."""

from dataclasses import replace

import pytest
import torch

from budgetplan.errors import ConfigError
from budgetplan.execute import rounds
from budgetplan.execute.compare import alternative_plan
from budgetplan.execute.plans import ClassPlan
from budgetplan.profile.compose import compose
from budgetplan.profile.profiler import ProfileRequest, profile_model
from budgetplan.verify import FAIL, PASS, SAT_OUT, check_class, verify_run
from fl_helpers import LAST_ONE, tiny_bert, tiny_config, tiny_plan

MEASURED = {"peak_bytes": 1000, "flops_forward": 60, "flops_backward": 40, "upload_bytes": 200, "batch_size": 4,
            "seq_len": 16}


def _plan(**kw) -> ClassPlan:
    base = dict(name="c", share=1.0, block_states=LAST_ONE, train_embeddings=False, upload_keys=(),
                predicted_peak_bytes=1000, predicted_flops=100, predicted_upload_bytes=200,
                memory_budget_bytes=1100)
    return ClassPlan(**{**base, **kw})


def test_pass_when_within_budget_and_plan():
    check = check_class(_plan(), MEASURED, tiny_plan(), tolerance=0.03)
    assert check.status == PASS and check.peak_error == 0.0 and check.measured_flops == 100  # 60 + 40


@pytest.mark.parametrize("change, reason", [
    (dict(memory_budget_bytes=999), "memory budget"),
    (dict(predicted_peak_bytes=960), "underestimates the peak by 4.2%"),  # 1000 / 960 - 1 = 4.17% > 3%
    (dict(predicted_upload_bytes=100), "differs from the planned"),
    (dict(flops_budget=99), "compute budget"),
    (dict(upload_budget_bytes=199), "uplink budget"),
])
def test_fail_names_the_reason(change, reason):
    check = check_class(_plan(**change), MEASURED, tiny_plan(), tolerance=0.03)
    assert check.status == FAIL and any(reason in r for r in check.reasons), check.reasons


def test_conservative_plan_within_budget_passes():
    assert check_class(_plan(predicted_peak_bytes=1200, memory_budget_bytes=1200), MEASURED, tiny_plan(), 0.03).status == PASS


def test_inactive_class_sits_out_and_unmeasured_fails():
    assert check_class(_plan(active=False), None, tiny_plan(), 0.03).status == SAT_OUT
    assert check_class(_plan(), None, tiny_plan(), 0.03).status == FAIL


def test_missing_run_dir_is_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        verify_run(tmp_path / "nope")


def test_profile_plan_run_verify_agree_within_3_percent(tmp_path):
    """The real loop: profile tiny-bert, configure a fleet CAFF-style from the profile, train, measure, verify."""
    torch.manual_seed(0)
    loaded = tiny_bert()
    profile = profile_model(loaded, ProfileRequest(batch_size=4, seq_len=16, lora_ranks=(4,), measure_configs=False))
    full = compose(profile, ("trained",) * 4).peak_bytes_predicted
    classes = tuple(ClassPlan(n, s, ("frozen",) * 4, False, (), memory_budget_bytes=int(full * f))
                    for n, s, f in (("weak", 0.5, 0.55), ("mid", 0.3, 0.75), ("strong", 0.2, 1.1)))
    plan = alternative_plan(replace(tiny_plan(), classes=classes), profile, "caff", loaded, 4)
    assert len({c.block_states for c in plan.classes}) == 3  # three different configurations
    rounds.run(plan, tiny_config(rounds=1, measure=True), tmp_path / "run")
    report = verify_run(tmp_path / "run")
    assert [c.status for c in report.checks] == [PASS] * 3, [c.reasons for c in report.checks]
    assert report.worst_peak_error <= 0.03
    assert all(c.measured_flops == c.planned_flops for c in report.checks)  # FLOPs compose exactly
    assert all(c.measured_upload_bytes == c.planned_upload_bytes for c in report.checks)
