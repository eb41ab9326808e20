"""Tables for device classes."""

from __future__ import annotations

from dataclasses import fields

from rich.table import Table

from budgetplan.report.markup import safe
from budgetplan.report.units import fmt_bytes, fmt_flops


def devices_table(devices) -> Table:
    table = Table(title="Device classes (profiles/*.toml); every number has a source: 'budgetplan devices show NAME'")
    table.add_column("name", no_wrap=True)
    for column in ("training\nmemory", "total\nmemory", "sustained\nGFLOP/s", "uplink\nMbit/s", "deadline\ns",
                   "upload\ns", "samples\n/ round"):
        table.add_column(column, justify="right", no_wrap=True)
    for d in devices:
        table.add_row(safe(d.name), fmt_bytes(d.memory_bytes), fmt_bytes(d.total_memory_bytes), f"{d.flops_per_s / 1e9:.3g}",
                      f"{d.uplink_bits_per_s / 1e6:.3g}", f"{d.round_deadline_s:g}", f"{d.upload_time_budget_s:g}",
                      str(d.samples_per_round))
    return table


def device_table(device) -> Table:
    sources = safe({s.split(":", 1)[0]: s.split(":", 1)[1].strip() for s in device.sources if ":" in s})
    table = Table(title=safe(f"{device.name}: {device.description}"), caption=safe(f"from {device.origin}"))
    for column in ("field", "value", "source"):
        table.add_column(column, overflow="fold")
    for f in fields(device):
        if f.name in ("name", "description", "sources", "origin"):
            continue
        value = getattr(device, f.name)
        shown = fmt_bytes(value) if f.name.endswith("_bytes") else f"{value:g}" if isinstance(value, float) else str(value)
        table.add_row(f.name, shown, sources.get(f.name, "-"))
    return table
