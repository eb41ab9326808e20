"""verify: measured first local steps against the plan, and a real profile -> plan -> run -> verify loop."""

from dataclasses import replace

import pytest
import torch

from budgetplan.errors import ConfigError
from budgetplan.execute import rounds
from budgetplan.execute.compare import alternative_plan
from budgetplan.plan import PlanBudget, PlanClass, PredictedCosts
from budgetplan.profile.compose import compose
from budgetplan.profile.profiler import ProfileRequest, profile_model
from budgetplan.execute.records import Measurement
from budgetplan.verify import FAIL, PASS, SAT_OUT, check_class, verify_run
from fl_helpers import LAST_ONE, memory_budget, tiny_bert, tiny_config, tiny_plan

MEASURED = Measurement(peak_bytes=1000, flops_forward=60, flops_backward=40, upload_bytes=200, batch_size=4, seq_len=16)


BIG = 10**12


def _plan(peak=1000, upload=200, memory_budget=1100, flops_budget=BIG, upload_budget=BIG, **kw) -> PlanClass:
    predicted = PredictedCosts(peak_bytes=peak, flops_forward=60, flops_backward=40, upload_bytes=upload)
    budget = PlanBudget(memory_bytes=memory_budget, flops_per_round=BIG, flops_per_step=flops_budget,
                        upload_bytes=upload_budget, samples_per_round=64)
    return PlanClass(name="c", share=1.0, block_states=LAST_ONE, trainable_names=(), predicted=predicted,
                     budget=budget, **kw)


def test_pass_when_within_budget_and_plan():
    check = check_class(_plan(), MEASURED, tiny_plan(), tolerance=0.03)
    assert check.status == PASS and check.peak_error == 0.0 and check.measured_flops == 100  # 60 + 40


@pytest.mark.parametrize("change, reason", [
    (dict(memory_budget=999), "memory budget"),
    (dict(peak=960), "underestimates the peak by 4.2%"),  # 1000 / 960 - 1 = 4.17% > 3%
    (dict(upload=100), "differs from the planned"),
    (dict(flops_budget=99), "compute budget"),
    (dict(upload_budget=199), "uplink budget"),
])
def test_fail_names_the_reason(change, reason):
    check = check_class(_plan(**change), MEASURED, tiny_plan(), tolerance=0.03)
    assert check.status == FAIL and any(reason in r for r in check.reasons), check.reasons


def test_conservative_plan_within_budget_passes():
    assert check_class(_plan(peak=1200, memory_budget=1200), MEASURED, tiny_plan(), 0.03).status == PASS


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
    classes = tuple(PlanClass(n, s, ("frozen",) * 4, (), budget=memory_budget(int(full * f)))
                    for n, s, f in (("weak", 0.5, 0.55), ("mid", 0.3, 0.75), ("strong", 0.2, 1.1)))
    plan = alternative_plan(replace(tiny_plan(), classes=classes), profile, "caff", loaded, 4)
    assert len({c.block_states for c in plan.classes}) == 3  # three different configurations
    rounds.run(plan, tiny_config(rounds=1, measure=True), tmp_path / "run")
    report = verify_run(tmp_path / "run")
    assert [c.status for c in report.checks] == [PASS] * 3, [c.reasons for c in report.checks]
    assert report.worst_peak_error <= 0.03
    assert all(c.measured_flops == c.predicted_flops for c in report.checks)  # FLOPs compose exactly
    assert all(c.measured_upload_bytes == c.predicted_upload_bytes for c in report.checks)
