"""Tables for everything before a run: device classes, a model's profile, measured importance and the plan.

`solve` and `plan show` draw the same plan table from the Plan. Units and escaping: report/text.py.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from rich.table import Table

from budgetplan.plan import Plan, PlanClass
from budgetplan.profile.profiler import describe_states
from budgetplan.profile.types import Importance, ModelProfile, is_trainable
from budgetplan.report.text import fmt_bytes, fmt_count, fmt_ratio, gflop, mib, number, safe


# --- device classes

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


def fleets_line(fleets) -> str:
    """The bundled fleets with their classes and shares, for `devices list`."""
    described = [f"{f.name} ({', '.join(f'{c.device.name} {c.share:.0%}' for c in f.classes)})" for f in fleets]
    return safe("bundled fleets, for 'budgetplan solve --fleet NAME': " + "; ".join(described))


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


# --- the profile

def profile_table(profile: ModelProfile) -> Table:
    ctx = profile.context
    shape = f"seq {ctx.seq_len}" if ctx.seq_len else f"image {ctx.image_size}px"
    table = Table(
        title=f"{safe(profile.model.name)}: one training step, batch {ctx.batch_size}, {shape}, {ctx.optimizer}, {ctx.dtype}",
        caption="derived = composed from per-part measurements; measured = a real step run under the live-tensor "
                "tracker. FLOPs = 2 x MACs for matmuls plus stated per-element formulas.",
    )
    table.add_column("configuration")
    for column in ("trainable\nparams", "fwd GFLOP\nderived", "bwd GFLOP\nderived", "saved act.\nMiB derived",
                   "peak MiB\nderived", "peak MiB\nmeasured", "error", "upload MiB\nderived"):
        table.add_column(column, justify="right")
    for config in profile.configs:
        table.add_row(
            safe(describe_states(config.block_states)), fmt_count(config.trainable_params),
            gflop(config.flops_forward), gflop(config.flops_backward), mib(config.activation_bytes),
            mib(config.peak_bytes_predicted), mib(config.peak_bytes_measured),
            fmt_ratio(config.peak_bytes_predicted, config.peak_bytes_measured), mib(config.upload_bytes),
        )
    return table


def uncounted_ops(profile: ModelProfile) -> dict[str, int]:
    parts = [*profile.post.values(), *(c for s in profile.pre.values() for c in s.values())]
    parts += [c for block in profile.blocks for by_b in block.states.values() for c in by_b.values()]
    total: dict[str, int] = {}
    for part in parts:
        for op, calls in part.uncounted_ops.items():
            total[op] = total.get(op, 0) + calls
    return total


def _distinct(m: dict, num_blocks: int) -> str:
    distinct = int(m.get("distinct_blocks", num_blocks))
    return f"{distinct} distinct of {num_blocks} blocks" if distinct != num_blocks else f"{num_blocks} blocks"


def _measure_hint(m: dict) -> str:
    if not m.get("config_runs"):
        return ""
    return " (--no-measure skips them)"


def _head(profile: ModelProfile) -> str:
    if profile.context.head_source == "model":
        return f"the model's own {profile.context.task} head, kept with its weights"
    return f"budgetplan's {profile.context.task} head ({profile.context.num_labels} outputs) on the base model"


def summary_lines(profile: ModelProfile) -> list[str]:
    m = profile.measurement
    lines = [safe(f"model {profile.model.name} ({profile.model.family}), {profile.model.num_blocks} blocks at "
                  f"'{profile.model.block_path}', {fmt_count(profile.model.num_params)} parameters, "
                  f"fingerprint {profile.model.fingerprint}"),
             f"measured {int(m.get('part_runs', 0))} part runs in {m.get('part_seconds', 0):.1f} s "
             f"({_distinct(m, profile.model.num_blocks)} x states, not configurations); "
             f"{int(m.get('config_runs', 0))} whole steps measured for their peaks in "
             f"{m.get('config_seconds', 0):.1f} s{_measure_hint(m)}",
             f"head: {_head(profile)}"]
    missing = uncounted_ops(profile)
    if missing:
        ops = ", ".join(f"{op} x{calls}" for op, calls in sorted(missing.items()))
        lines.append(f"[yellow]ops with no FLOP formula (not counted): {safe(ops)}[/]")
    else:
        lines.append("every executed op has a FLOP formula or is data movement")
    return lines


# --- measured importance (nats of pilot loss drop over training the head alone)

def importance_table(result: Importance) -> Table:
    states = sorted({s for block in result.blocks for s in block}, key=lambda s: (s != "trained", s))
    table = Table(title=f"measured importance: pilot loss drop over the head alone (nats, {safe(result.data)})")
    table.add_column("block", justify="right")
    for state in states:
        table.add_column(safe(state), justify="right")
    for index, block in enumerate(result.blocks):
        table.add_row(str(index), *(f"{block.get(s, 0.0):.4f}" for s in states))
    return table


# --- the plan

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
