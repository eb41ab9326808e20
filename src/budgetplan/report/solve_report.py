"""Tables for the solve stage, drawn from the Plan (so `solve` and `plan show` print the same thing)."""

from __future__ import annotations

from rich.table import Table

from budgetplan.plan import Plan, PlanClass
from budgetplan.profile.types import is_trainable
from budgetplan.report.markup import safe
from budgetplan.report.units import fmt_count, gflop, mib

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


def _active_row(c: PlanClass, num_blocks: int, with_share: bool) -> list[str]:
    predicted, budget, answer = c.predicted, c.budget, c.answer
    trainable = sum(is_trainable(s) for s in c.block_states)
    status = "" if answer is None or answer.status == "OPTIMAL" else f" [yellow]({answer.status})[/]"
    params = "" if predicted.trainable_params is None else f", {fmt_count(predicted.trainable_params)} params"
    return [
        c.name + (f"\n{c.share:.0%} of fleet" if with_share else "") + status,
        f"{describe_blocks(list(c.block_states))}" + (" · embeddings int8" if c.int8_embeddings else "")
        + f"\n{trainable}/{num_blocks} blocks{params}",
        _use(predicted.peak_bytes, budget.memory_bytes, mib)
        + (f"\nmeasured {mib(c.measured_peak_bytes)}" if c.measured_peak_bytes is not None else ""),
        _use(predicted.flops_per_round, budget.flops_per_round, gflop),
        _use(predicted.upload_bytes, budget.upload_bytes, mib), "-" if answer is None else answer.binding,
    ]


def plan_table(plan: Plan) -> Table:
    plan = safe(plan)  # names, reasons and states come from a file
    model, ctx, solver = plan.model, plan.context, plan.solver
    shape = f"seq {ctx.seq_len}" if ctx.seq_len else f"image {ctx.image_size}px"
    with_share = plan.fleet is not None
    objective = "" if solver is None else f"; objective: {solver.objective}" + (
        " (last-k only)" if solver.contiguous else "")
    table = Table(
        title=f"Plan for {model.name} ({model.num_blocks} blocks; batch {ctx.batch_size}, {shape}, "
              f"{ctx.optimizer}){objective}",
        caption="All costs derived: composed from the profile's per-block measurements. "
                "binds = the budget with the least slack, 'none' when no budget limits the objective.",
    )
    table.add_column("device class")
    table.add_column("blocks trained\n(0 = input side)")
    for column in ("peak MiB", "GFLOP\n/ round", "upload MiB\n/ round", "binds"):
        table.add_column(column, justify="right")
    for c in plan.classes:
        if c.active and c.predicted is not None and c.budget is not None and c.predicted.flops_per_round is not None:
            table.add_row(*_active_row(c, model.num_blocks, with_share), end_section=True)
        elif c.active:
            table.add_row(c.name, describe_blocks(list(c.block_states)), "-", "-", "-", "-", end_section=True)
        else:
            reason = (c.reason or "").removeprefix(f"{c.name}: ").removeprefix("sits out ")  # escaped with the plan
            table.add_row(c.name, f"[red]sits out[/]: {reason}", "-", "-", "-", "-", end_section=True)
    return table


def fleet_table(fleet: dict) -> Table:
    """Candidate models of a fleet solve with their share-weighted scores."""
    fleet = safe(fleet)
    table = Table(title=f"Fleet {fleet['name']}: model choice (score = sum of share x objective over classes "
                        "that fit)")
    for column in ("model", "fingerprint", "score", "classes that fit", "chosen"):
        table.add_column(column, justify="left" if column in ("model", "fingerprint") else "right")
    for c in fleet["candidates"]:
        table.add_row(c["model"], c["fingerprint"][:19] + "...", f"{c['score']:.3f}",
                      f"{c['classes_fit']} of {c['classes']}", "yes" if c["chosen"] else "")
    table.caption = limits_line(fleet.get("limits") or {}, fleet.get("limits_use"))
    return table


def limits_line(limits: dict, use: dict | None) -> str:
    """The fleet limits used, what the chosen model's plans use of them (derived) and whether they bind."""
    if not limits.get("ingress_bytes_per_round") and not limits.get("min_coverage"):
        return "fleet limits: none (each class gets its own best plan)"
    use = use or {}
    parts = []
    if limits.get("ingress_bytes_per_round"):
        used = use.get("ingress_bytes_per_round")
        parts.append(f"server ingress {mib(limits['ingress_bytes_per_round'])} MiB per round from "
                     f"{limits.get('clients_per_round')} clients per round"
                     + (f" (used {mib(used)} MiB, derived)" if used is not None else ""))
    if limits.get("min_coverage"):
        least = use.get("least_coverage")
        parts.append(f"min coverage {limits['min_coverage']:g} of a round's clients per trained block"
                     + (f" (least {least:.3f}, derived)" if least is not None else ""))
    binds = use.get("binds")
    verdict = "" if binds is None else ("; they bind: some classes take another plan or sit out" if binds
                                        else "; they do not bind: every class keeps its own best plan")
    return "fleet limits: " + "; ".join(parts) + verdict
