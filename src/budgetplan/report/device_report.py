"""Tables for device classes (units: report/units.py)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from rich.table import Table

from budgetplan.report.markup import safe
from budgetplan.report.units import fmt_bytes, mib, number


def _origin(device, bundled_dir: Path | None) -> str:
    folder = Path(device.origin).parent
    return "bundled" if bundled_dir is not None and folder == bundled_dir else str(folder)


def devices_table(devices, bundled_dir: Path | None = None) -> Table:
    table = Table(title="Device classes; every number has a source: 'budgetplan devices show NAME'",
                  caption="train = memory for training; GFLOP/s sustained; round = compute deadline; from: bundled, or your "
                          "folder (--devices-dir / BUDGETPLAN_DEVICES_DIR, searched first)")
    table.add_column("name")
    for column in ("train\nMiB", "total\nMiB", "GFLOP/s", "uplink\nMbit/s", "round\ns", "upload\ns",
                   "samples\n/ round"):
        table.add_column(column, justify="right")
    table.add_column("from")
    for d in devices:
        table.add_row(safe(d.name), mib(d.memory_bytes), mib(d.total_memory_bytes), number(d.flops_per_s / 1e9),
                      number(d.uplink_bits_per_s / 1e6), f"{d.round_deadline_s:g}", f"{d.upload_time_budget_s:g}",
                      str(d.samples_per_round), safe(_origin(d, bundled_dir)))
    return table


def _value(name: str, value) -> str:
    if name.endswith("_bytes"):
        return fmt_bytes(value)
    if name == "flops_per_s":
        return f"{number(value / 1e9)} GFLOP/s"
    if name == "uplink_bits_per_s":
        return f"{number(value / 1e6)} Mbit/s"
    return f"{value:g}" if isinstance(value, float) else str(value)


def device_table(device) -> Table:
    sources = safe({s.split(":", 1)[0]: s.split(":", 1)[1].strip() for s in device.sources if ":" in s})
    table = Table(title=safe(f"{device.name}: {device.description}"), caption=safe(f"from {device.origin}"))
    for column in ("field", "value", "source"):
        table.add_column(column)
    for f in fields(device):
        if f.name in ("name", "description", "sources", "origin"):
            continue
        table.add_row(f.name, _value(f.name, getattr(device, f.name)), sources.get(f.name, "-"))
    return table
