"""Table of measured block importance (nats of pilot loss drop over training the head alone)."""

from __future__ import annotations

from rich.table import Table

from budgetplan.profile.types import Importance


def importance_table(result: Importance) -> Table:
    states = sorted({s for block in result.blocks for s in block}, key=lambda s: (s != "trained", s))
    table = Table(title=f"measured importance: pilot loss drop over the head alone (nats, {result.data})")
    table.add_column("block", justify="right")
    for state in states:
        table.add_column(state, justify="right")
    for index, block in enumerate(result.blocks):
        table.add_row(str(index), *(f"{block.get(s, 0.0):.4f}" for s in states))
    return table
