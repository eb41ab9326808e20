"""Measured vs planned: each device class's first local step of a run against its plan and budgets, and each
fallback rung of its ladder that a client trained (measured the first time one did) against that rung's prediction.

PASS needs: measured peak within the memory budget and not above the planned peak by more than the tolerance
(a plan that underestimates is unsafe even when this device had room), FLOPs within the compute budget,
upload bytes equal to the planned ones and within the uplink budget, measured at the plan's batch shape.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from budgetplan.errors import ConfigError, PlanError
from budgetplan.execute.records import (MEASUREMENTS_FILE, Measurement, measurement_key,
                                        measurements_from_dict)
from budgetplan.files import other_kind, read_json
from budgetplan.plan import Plan, PlanClass, read_plan
from budgetplan.validate import check_measurements, check_options

DEFAULT_TOLERANCE = 0.03  # relative peak error allowed above the plan
PASS, FAIL, SAT_OUT = "PASS", "FAIL", "SAT OUT"
NOT_MEASURED = Measurement()  # a class without a measurement: every measured count None


@dataclass(frozen=True)
class ClassCheck:
    name: str
    status: str
    reasons: tuple[str, ...]
    predicted_peak_bytes: int | None  # derived (the plan)
    measured_peak_bytes: int | None
    memory_budget_bytes: int | None
    predicted_flops: int | None  # forward + backward of one step
    measured_flops: int | None
    flops_budget: int | None  # per step
    predicted_upload_bytes: int | None
    measured_upload_bytes: int | None
    upload_budget_bytes: int | None

    @property
    def peak_error(self) -> float | None:
        """(measured - planned) / planned; negative when the plan is conservative."""
        if not self.predicted_peak_bytes or self.measured_peak_bytes is None:
            return None
        return (self.measured_peak_bytes - self.predicted_peak_bytes) / self.predicted_peak_bytes


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


@dataclass(frozen=True)
class Planned:
    """A class's predicted costs and budgets, None where the plan has none (a hand-made plan)."""

    peak_bytes: int | None
    flops: int | None  # forward + backward of one step
    upload_bytes: int | None
    memory_budget_bytes: int | None
    flops_budget: int | None  # per step
    upload_budget_bytes: int | None

    @staticmethod
    def of(c: PlanClass) -> Planned:
        p, b = c.predicted, c.budget
        return Planned(None if p is None else p.peak_bytes, None if p is None else p.flops_per_step,
                       None if p is None else p.upload_bytes, None if b is None else b.memory_bytes,
                       None if b is None else b.flops_per_step, None if b is None else b.upload_bytes)


def check_class(plan_class: PlanClass, measured: Measurement | None, plan: Plan, tolerance: float) -> ClassCheck:
    planned = Planned.of(plan_class)
    if not plan_class.active:
        return _check(plan_class.name, planned, SAT_OUT, ("nothing fits this class's budget; its clients sat out",),
                      NOT_MEASURED)
    if measured is None or measured.error is not None or measured.peak_bytes is None:
        why = "no measurement in this run (was it run with --no-measure?)"
        if measured is not None and measured.error is not None:
            why = measured.error
        return _check(plan_class.name, planned, FAIL, (why,), NOT_MEASURED)
    reasons = _reasons(planned, measured, plan, tolerance)
    return _check(plan_class.name, planned, FAIL if reasons else PASS, tuple(reasons), measured)


def _reasons(p: Planned, m: Measurement, plan: Plan, tolerance: float) -> list[str]:
    reasons = []
    flops = m.flops_per_step
    ctx = plan.context
    if m.batch_size != ctx.batch_size or (ctx.seq_len and m.seq_len != ctx.seq_len):
        reasons.append(f"measured at batch {m.batch_size} x {m.seq_len}, planned at "
                       f"{ctx.batch_size} x {ctx.seq_len}")
    if p.memory_budget_bytes is not None and m.peak_bytes > p.memory_budget_bytes:
        reasons.append("peak over the memory budget")
    if p.peak_bytes and m.peak_bytes > p.peak_bytes * (1 + tolerance):
        over = m.peak_bytes / p.peak_bytes - 1
        reasons.append(f"plan underestimates the peak by {over:.1%} (> {tolerance:.0%})")
    if p.flops_budget is not None and flops > p.flops_budget:
        reasons.append("FLOPs over the compute budget")
    if p.upload_bytes is not None and m.upload_bytes != p.upload_bytes:
        reasons.append(f"upload {m.upload_bytes} B differs from the planned {p.upload_bytes} B")
    if p.upload_budget_bytes is not None and m.upload_bytes > p.upload_budget_bytes:
        reasons.append("upload over the uplink budget")
    return reasons


def _check(name: str, p: Planned, status: str, reasons: tuple[str, ...], m: Measurement) -> ClassCheck:
    return ClassCheck(
        name=name, status=status, reasons=reasons, predicted_peak_bytes=p.peak_bytes,
        measured_peak_bytes=m.peak_bytes, memory_budget_bytes=p.memory_budget_bytes,
        predicted_flops=p.flops, measured_flops=m.flops_per_step, flops_budget=p.flops_budget,
        predicted_upload_bytes=p.upload_bytes, measured_upload_bytes=m.upload_bytes,
        upload_budget_bytes=p.upload_budget_bytes,
    )


def verify_run(run_dir: str | Path, tolerance: float = DEFAULT_TOLERANCE) -> VerifyReport:
    """Check every class of the run in `run_dir` against its plan."""
    run_dir = Path(run_dir)
    fix = "give the --out of a 'budgetplan run'"
    if not run_dir.exists():
        raise ConfigError(f"run directory {run_dir} does not exist; {fix}")
    if not (run_dir / "plan.json").is_file():
        wrong = other_kind(run_dir, "a run directory", own="run-dir")
        raise ConfigError(f"{wrong or f'{run_dir} is not a run directory (no plan.json)'}; {fix}")
    check_options({"--tolerance": tolerance})
    plan = read_plan(run_dir / "plan.json")
    path = run_dir / MEASUREMENTS_FILE
    measurements = measurements_from_dict(check_measurements(
        read_json(path, "measurements file", "run the plan again", PlanError),
        f"measurements file {path}")) if path.is_file() else {}
    checks = []
    for c in plan.classes:
        checks.append(check_class(c, measurements.get(c.name), plan, tolerance))
        for rung in range(1, c.rungs):  # the rungs a client trained; one never used has no measurement
            key = measurement_key(c.name, rung)
            if key in measurements:
                checks.append(replace(check_class(c.at_rung(rung), measurements[key], plan, tolerance), name=key))
    return VerifyReport(str(run_dir), tolerance, tuple(checks))


def report_to_dict(report: VerifyReport) -> dict:
    rows = []
    for c in report.checks:
        row = {k: getattr(c, k) for k in c.__dataclass_fields__}
        row["reasons"] = list(c.reasons)
        row["peak_error"] = c.peak_error
        rows.append(row)
    return {"run_dir": report.run_dir, "tolerance": report.tolerance, "passed": report.passed,
            "worst_peak_error": report.worst_peak_error, "classes": rows}
