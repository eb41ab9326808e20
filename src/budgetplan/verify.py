"""Measured vs planned: each device class's first local step of a run against its plan and budgets.

PASS needs: measured peak within the memory budget and not above the planned peak by more than the tolerance
(a plan that underestimates is unsafe even when this device had room), FLOPs within the compute budget,
upload bytes equal to the planned ones and within the uplink budget, measured at the plan's batch shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from budgetplan.errors import ConfigError
from budgetplan.execute.plans import ClassPlan, RunPlan, read_run_plan

DEFAULT_TOLERANCE = 0.03  # relative peak error allowed above the plan
PASS, FAIL, SAT_OUT = "PASS", "FAIL", "SAT OUT"


@dataclass(frozen=True)
class ClassCheck:
    name: str
    status: str
    reasons: tuple[str, ...]
    planned_peak_bytes: int | None
    measured_peak_bytes: int | None
    memory_budget_bytes: int | None
    planned_flops: int | None  # forward + backward of one step
    measured_flops: int | None
    flops_budget: int | None
    planned_upload_bytes: int | None
    measured_upload_bytes: int | None
    upload_budget_bytes: int | None

    @property
    def peak_error(self) -> float | None:
        """(measured - planned) / planned; negative when the plan is conservative."""
        if not self.planned_peak_bytes or self.measured_peak_bytes is None:
            return None
        return (self.measured_peak_bytes - self.planned_peak_bytes) / self.planned_peak_bytes


@dataclass(frozen=True)
class VerifyReport:
    run_dir: str
    tolerance: float
    checks: tuple[ClassCheck, ...]

    @property
    def passed(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    @property
    def worst_peak_error(self) -> float | None:
        errors = [abs(c.peak_error) for c in self.checks if c.peak_error is not None]
        return max(errors) if errors else None


def check_class(plan: ClassPlan, measured: dict | None, run_plan: RunPlan, tolerance: float) -> ClassCheck:
    if not plan.active:
        return _check(plan, SAT_OUT, ("nothing fits this class's budget; its clients sat out",), {})
    if not measured or "peak_bytes" not in measured:
        why = (measured or {}).get("error", "no measurement in this run (was it run with --no-measure?)")
        return _check(plan, FAIL, (why,), {})
    reasons = _reasons(plan, measured, run_plan, tolerance)
    return _check(plan, FAIL if reasons else PASS, tuple(reasons), measured)


def _reasons(plan: ClassPlan, m: dict, run_plan: RunPlan, tolerance: float) -> list[str]:
    reasons = []
    flops = m["flops_forward"] + m["flops_backward"]
    if m.get("batch_size") != run_plan.batch_size or (run_plan.seq_len and m.get("seq_len") != run_plan.seq_len):
        reasons.append(f"measured at batch {m.get('batch_size')} x {m.get('seq_len')}, planned at "
                       f"{run_plan.batch_size} x {run_plan.seq_len}")
    if plan.memory_budget_bytes is not None and m["peak_bytes"] > plan.memory_budget_bytes:
        reasons.append("peak over the memory budget")
    if plan.predicted_peak_bytes and m["peak_bytes"] > plan.predicted_peak_bytes * (1 + tolerance):
        over = m["peak_bytes"] / plan.predicted_peak_bytes - 1
        reasons.append(f"plan underestimates the peak by {over:.1%} (> {tolerance:.0%})")
    if plan.flops_budget is not None and flops > plan.flops_budget:
        reasons.append("FLOPs over the compute budget")
    if plan.predicted_upload_bytes is not None and m["upload_bytes"] != plan.predicted_upload_bytes:
        reasons.append(f"upload {m['upload_bytes']} B differs from the planned {plan.predicted_upload_bytes} B")
    if plan.upload_budget_bytes is not None and m["upload_bytes"] > plan.upload_budget_bytes:
        reasons.append("upload over the uplink budget")
    return reasons


def _check(plan: ClassPlan, status: str, reasons: tuple[str, ...], m: dict) -> ClassCheck:
    flops = m["flops_forward"] + m["flops_backward"] if "flops_forward" in m else None
    return ClassCheck(
        name=plan.name, status=status, reasons=reasons, planned_peak_bytes=plan.predicted_peak_bytes,
        measured_peak_bytes=m.get("peak_bytes"), memory_budget_bytes=plan.memory_budget_bytes,
        planned_flops=plan.predicted_flops, measured_flops=flops, flops_budget=plan.flops_budget,
        planned_upload_bytes=plan.predicted_upload_bytes, measured_upload_bytes=m.get("upload_bytes"),
        upload_budget_bytes=plan.upload_budget_bytes,
    )


def verify_run(run_dir: str | Path, tolerance: float = DEFAULT_TOLERANCE) -> VerifyReport:
    """Check every class of the run in `run_dir` against its plan."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run directory {run_dir} does not exist; give the --out of a 'budgetplan run'")
    if not (run_dir / "plan.json").is_file():
        raise ConfigError(f"{run_dir} is not a run directory (no plan.json); give the --out of a 'budgetplan run'")
    if tolerance < 0:
        raise ConfigError(f"--tolerance must be non-negative, got {tolerance}")
    plan = read_run_plan(run_dir / "plan.json")
    path = run_dir / "measurements.json"
    measurements = json.loads(path.read_text()) if path.is_file() else {}
    checks = tuple(check_class(c, measurements.get(c.name), plan, tolerance) for c in plan.classes)
    return VerifyReport(str(run_dir), tolerance, checks)


def report_to_dict(report: VerifyReport) -> dict:
    rows = []
    for c in report.checks:
        row = {k: getattr(c, k) for k in c.__dataclass_fields__}
        row["reasons"] = list(c.reasons)
        row["peak_error"] = c.peak_error
        rows.append(row)
    return {"run_dir": report.run_dir, "tolerance": report.tolerance, "passed": report.passed,
            "worst_peak_error": report.worst_peak_error, "classes": rows}
