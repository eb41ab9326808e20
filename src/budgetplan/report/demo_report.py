"""The demo's last table: what each class was planned and measured to use, beside what the model learnt."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table

from budgetplan.execute.records import RoundRecord
from budgetplan.report.markup import safe
from budgetplan.verify import PASS, VerifyReport


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
