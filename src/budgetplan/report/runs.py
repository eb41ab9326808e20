"""Tables for a run and after it: rounds, dropped clients, verification, comparisons and the demo's result.

Printing only: no computation beyond formatting. Units and escaping: report/text.py.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from budgetplan.execute.records import RoundRecord
from budgetplan.report.text import gflop as _giga
from budgetplan.report.text import mib as _mib
from budgetplan.report.text import safe
from budgetplan.verify import PASS, SAT_OUT, VerifyReport


# --- rounds, verification and comparisons

def _pct(value) -> str:
    return "-" if value is None else f"{value:+.1%}"


def _fixed(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def rounds_table(history: Sequence[RoundRecord], title: str = "Rounds") -> Table:
    """One row per round; a column of the clients that trained a lower rung of their ladder when any did."""
    table = Table(title=safe(title))
    lower = any(t.rung for r in history for t in r.trained)
    columns = ("round", "trained", *(("on a lower\nrung",) if lower else ()), "dropped", "accuracy", "loss",
               "upload\nMiB", "GFLOP\nmeasured", "s")
    for column in columns:
        table.add_column(column, justify="right")
    for r in history:
        fell_back = (str(sum(1 for t in r.trained if t.rung)),) if lower else ()
        table.add_row(str(r.round), str(len(r.trained)), *fell_back, str(len(r.dropped)), f"{r.accuracy:.4f}",
                      _fixed(r.loss, 4), _mib(r.upload_bytes), _giga(r.flops_measured), _fixed(r.seconds, 1))
    return table


def dropped_table(history: Sequence[RoundRecord]) -> Table | None:
    rows = [(r.round, d) for r in history for d in r.dropped]
    if not rows:
        return None
    table = Table(title="Dropped clients")
    for column in ("round", "client", "class", "reason"):
        table.add_column(column)
    for round_index, d in rows:
        table.add_row(str(round_index), str(d.client), safe(d.class_name), safe(d.reason))
    return table


def _planned_measured(planned, measured, fmt) -> str:
    return f"{fmt(planned)} → {fmt(measured)}"


def verify_table(report: VerifyReport) -> Table:
    table = Table(title=f"Verify {safe(report.run_dir)}: each class's first local step, measured against its plan",
                  caption=f"PASS = measured peak within the memory budget and at most {report.tolerance:.0%} above "
                          "the plan, FLOPs within budget, upload exactly as planned. Peak error = (measured - "
                          "planned) / planned.")
    table.add_column("class")
    for column in ("peak MiB\nplan → meas.", "error", "budget\nMiB", "GFLOP/step\nplan → meas.",
                   "upload MiB\nplan → meas.", "status"):
        table.add_column(column, justify="left" if column == "status" else "right")
    for c in report.checks:
        style = "green" if c.status == PASS else ("yellow" if c.status == SAT_OUT else "red")
        status = c.status + (f"\n{safe('; '.join(c.reasons))}" if c.reasons and c.status != SAT_OUT else "")
        table.add_row(safe(c.name), _planned_measured(c.predicted_peak_bytes, c.measured_peak_bytes, _mib),
                      _pct(c.peak_error), _mib(c.memory_budget_bytes),
                      _planned_measured(c.predicted_flops, c.measured_flops, _giga),
                      _planned_measured(c.predicted_upload_bytes, c.measured_upload_bytes, _mib),
                      f"[{style}]{status}[/]", end_section=True)
    return table


def print_run(console: Console, history: Sequence[RoundRecord]) -> None:
    console.print(rounds_table(history))
    dropped = dropped_table(history)
    if dropped is not None:
        console.print(dropped)


def print_verify(console: Console, report: VerifyReport) -> None:
    console.print(verify_table(report))
    worst = report.worst_peak_error
    verdict = "[green]all classes PASS[/]" if report.passed else "[red]some classes FAIL[/]"
    console.print(f"{verdict}; worst peak error {'-' if worst is None else f'{worst:.2%}'}")


def compare_table(rows: list, target: float | None) -> Table:
    """rows: CompareRow-like dicts with mean/std over seeds."""
    table = Table(title="Side by side (mean ± std over seeds)")
    columns = ("scheme", "final acc", "best acc", f"rounds to {target:g}" if target else "rounds to target",
               "peak MiB per class", "GFLOP\n/ round", "upload MiB\n/ round", "clients\ntaking part")
    for column in columns:
        table.add_column(column, justify="left" if column in ("scheme", "peak MiB per class") else "right")
    for r in rows:
        table.add_row(r["scheme"], _mean_std(r["final_accuracy"], "{:.4f}"), _mean_std(r["best_accuracy"], "{:.4f}"),
                      _rounds(r["rounds_to_target"]), r["peak_per_class"], _mean_std(r["gflops_per_round"], "{:.2f}"),
                      _mean_std(r["upload_mib_per_round"], "{:.2f}"), f"{r['participation']:.0%}")
    return table


def _mean_std(pair, fmt: str) -> str:
    mean, std = pair
    return "-" if mean is None else f"{fmt.format(mean)} ± {fmt.format(std)}"


def _rounds(values: list) -> str:
    reached = [v for v in values if v is not None]
    if not reached:
        return "not reached"
    text = f"{sum(reached) / len(reached):.1f}"
    return text if len(reached) == len(values) else f"{text} ({len(reached)}/{len(values)} seeds)"


# --- the demo's last table: what each class was planned and measured to use, beside what the model learnt

def _pair(planned, measured, unit: float, fmt: str) -> str:
    def one(v):
        return "-" if v is None else fmt.format(v / unit)
    return f"{one(planned)} → {one(measured)}"


def demo_table(report: VerifyReport, history: Sequence[RoundRecord], majority: float) -> Table:
    """One row per class: planned → measured peak, FLOPs, upload, status, and the global model's accuracy."""
    final, first = history[-1].accuracy, history[0].accuracy
    table = Table(title=f"Demo result: held-out accuracy {final:.3f} after round {len(history)} "
                        f"(round 1: {first:.3f}); majority class {majority:.3f}")
    for column in ("class", "peak MiB\nplanned → measured", "GFLOP / step\nplanned → measured",
                   "upload MiB\nplanned → measured", "status", "held-out accuracy\n(global model, measured)"):
        table.add_column(column, justify="left" if column in ("class", "status") else "right")
    for c in report.checks:
        style = "green" if c.status == PASS else "yellow"
        table.add_row(safe(c.name), _pair(c.predicted_peak_bytes, c.measured_peak_bytes, 2**20, "{:.1f}"),
                      _pair(c.predicted_flops, c.measured_flops, 1e9, "{:.2f}"),
                      _pair(c.predicted_upload_bytes, c.measured_upload_bytes, 2**20, "{:.1f}"),
                      f"[{style}]{c.status}[/]", f"{final:.3f}")
    return table


def majority_line(final: float, majority: float, count: int) -> str:
    gain = final - majority
    verdict = "above" if gain > 0 else "not above"
    return (f"held-out accuracy {final:.3f} vs majority class {majority:.3f} on the same {count} held-out "
            f"examples: {verdict} it by {gain:+.3f} (measured)")
