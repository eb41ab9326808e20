"""How a value becomes text in a report: one unit convention for every number, and escaping of user strings.

Units. Bytes are binary mebibytes (MiB = 2**20 bytes), work is GFLOP (1e9 floating-point operations; FLOPs = 2 x
MACs), rates GFLOP/s, uplinks Mbit/s (1e6 bits). Tables put the unit in the column header and bare numbers in the
cells (`mib`, `gflop`); running text uses `fmt_bytes` / `fmt_flops`, which append the unit. No MB, GB, kB, TFLOP or
MFLOP anywhere, so the same budget reads the same in `devices list`, `solve`, `verify` and `compare`.

Escaping. rich reads "[...]" in a printed string as markup; a class named "[/bad]" would crash the table
(MarkupError) and one named "[link=...]" would restyle it. Report functions pass every string that came from a file
or an option through `safe` first and add their own markup afterwards.
"""

from __future__ import annotations

import math
from dataclasses import fields, is_dataclass, replace

from rich.markup import escape


# --- numbers with units

MIB = 2**20
GFLOP = 1e9
BYTES_UNIT, WORK_UNIT = "MiB", "GFLOP"


def number(value: float) -> str:
    """1 decimal from 100 up, 2 from 1 up, else 3 significant digits (0.0123): small models stay readable."""
    size = abs(value)
    if size == 0 or not math.isfinite(value):
        return f"{value:g}"
    if size >= 100:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.{min(12, 2 - math.floor(math.log10(size)))}f}"


def mib(value: int | float | None) -> str:
    """Bytes as a bare MiB number for a column headed '... MiB'."""
    return "-" if value is None else number(value / MIB)


def gflop(value: int | float | None) -> str:
    """FLOPs as a bare GFLOP number for a column headed '... GFLOP'."""
    return "-" if value is None else number(value / GFLOP)


def fmt_bytes(value: int | float | None) -> str:
    return "-" if value is None else f"{mib(value)} {BYTES_UNIT}"


def fmt_flops(value: int | float | None) -> str:
    return "-" if value is None else f"{gflop(value)} {WORK_UNIT}"


def fmt_count(value: int) -> str:
    if value >= 1e6:
        return f"{value / 1e6:.2f} M"
    if value >= 1e3:
        return f"{value / 1e3:.1f} k"
    return str(value)


def fmt_ratio(predicted: int, measured: int | None) -> str:
    if not measured:
        return "-"
    return f"{(predicted - measured) / measured:+.1%}"


# --- user strings, escaped for rich

def safe(data):
    """`data` with every string escaped for rich markup (dict keys and dataclass fields too; others unchanged)."""
    if is_dataclass(data) and not isinstance(data, type):
        return replace(data, **{f.name: safe(getattr(data, f.name)) for f in fields(data) if f.init})
    if isinstance(data, str):
        return escape(data)
    if isinstance(data, dict):
        return {safe(k): safe(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(safe(v) for v in data)
    return data
