"""Tables for the solve stage, drawn from the plan JSON (so `solve` and `plan show` print the same thing)."""

from __future__ import annotations

from rich.table import Table

from budgetplan.profile.types import is_trainable
from budgetplan.report.units import fmt_bytes, fmt_count, fmt_flops

SHORT = {"frozen_outside": "frozen", "frozen_in_path": "frozen (in grad path)", "trained": "trained"}


def _span(start: int, end: int) -> str:
    return f"{start}" if start == end else f"{start}-{end}"


def describe_blocks(block_states: list[str]) -> str:
    """Runs of equal states, e.g. '0-3 frozen · 4 lora-8 · 5 trained'."""
    runs, start = [], 0
    for i in range(1, len(block_states) + 1):
        if i == len(block_states) or block_states[i] != block_states[start]:
            runs.append(f"{_span(start, i - 1)} {SHORT.get(block_states[start], block_states[start])}")
            start = i
    return " · ".join(runs)


def _use(used: int, limit: int, fmt) -> str:
    return f"{fmt(used)}\n{used / limit:.0%} of {fmt(limit)}"


def _active_row(name: str, entry: dict, num_blocks: int, with_share: bool) -> list[str]:
    predicted, budget = entry["predicted"], entry["budget"]
    trainable = sum(is_trainable(s) for s in entry["block_states"])
    measured = (entry.get("measured") or {}).get("peak_bytes")
    status = "" if entry["status"] == "OPTIMAL" else f" [yellow]({entry['status']})[/]"
    return [
        name + (f"\n{entry['share']:.0%} of fleet" if with_share else "") + status,
        f"{describe_blocks(entry['block_states'])}\n{trainable}/{num_blocks} blocks, "
        f"{fmt_count(predicted['trainable_params'])} params",
        _use(predicted["peak_bytes"], budget["memory_bytes"], fmt_bytes)
        + (f"\nmeasured {fmt_bytes(measured)}" if measured is not None else ""),
        _use(predicted["flops_per_round"], budget["flops_per_round"], fmt_flops),
        _use(predicted["upload_bytes"], budget["upload_bytes"], fmt_bytes), entry["binding"],
    ]


def plan_table(plan: dict) -> Table:
    model, ctx = plan["model"], plan["context"]
    shape = f"seq {ctx['seq_len']}" if ctx.get("seq_len") else f"image {ctx.get('image_size')}px"
    with_share = plan.get("fleet") is not None
    table = Table(
        title=f"Plan for {model['name']} ({model['num_blocks']} blocks; batch {ctx['batch_size']}, {shape}, "
              f"{ctx['optimizer']}); objective: {plan['solver']['objective']}"
              + (" (last-k only)" if plan["solver"]["contiguous"] else ""),
        caption="All costs derived: composed from the profile's per-block measurements. "
                "binds = the budget with the least slack, 'none' when no budget limits the objective.",
    )
    table.add_column("device class", overflow="fold")
    table.add_column("blocks trained (0 = nearest the input)")
    for column in ("peak memory", "compute / round", "upload / round", "binds"):
        table.add_column(column, justify="right")
    for name, entry in plan["classes"].items():
        if entry["active"]:
            table.add_row(*_active_row(name, entry, model["num_blocks"], with_share), end_section=True)
        else:
            table.add_row(name, f"[red]sits out[/]: {entry.get('reason') or ''}", "-", "-", "-", "-", end_section=True)
    return table


def fleet_table(fleet: dict) -> Table:
    """Candidate models of a fleet solve with their share-weighted scores."""
    table = Table(title=f"Fleet {fleet['name']}: model choice (score = sum of share x objective over classes "
                        "that fit)")
    for column in ("model", "fingerprint", "score", "classes that fit", "chosen"):
        table.add_column(column, justify="left" if column in ("model", "fingerprint") else "right")
    for c in fleet["candidates"]:
        table.add_row(c["model"], c["fingerprint"][:19] + "...", f"{c['score']:.3f}",
                      f"{c['classes_fit']} of {c['classes']}", "yes" if c["chosen"] else "")
    return table
