"""User strings in rich output: every string that came from a file or an option is escaped before rich sees it.

rich reads "[...]" in a printed string as markup; a class named "[/bad]" would crash the table (MarkupError) and
one named "[link=...]" would restyle it. Report functions pass their input through `safe` first and add their
own markup afterwards.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass, replace

from rich.markup import escape


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
