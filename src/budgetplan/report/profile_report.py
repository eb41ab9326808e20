"""Tables for the profile stage."""

from __future__ import annotations

from rich.table import Table

from budgetplan.profile.profiler import describe_states
from budgetplan.profile.types import ModelProfile
from budgetplan.report.markup import safe
from budgetplan.report.units import fmt_bytes, fmt_count, fmt_flops, fmt_ratio


def profile_table(profile: ModelProfile) -> Table:
    ctx = profile.context
    shape = f"seq {ctx.seq_len}" if ctx.seq_len else f"image {ctx.image_size}px"
    table = Table(
        title=f"{safe(profile.model.name)}: one training step, batch {ctx.batch_size}, {shape}, {ctx.optimizer}, {ctx.dtype}",
        caption="derived = composed from per-part measurements; measured = a real step run under the live-tensor "
                "tracker. FLOPs = 2 x MACs for matmuls plus stated per-element formulas.",
    )
    table.add_column("configuration", no_wrap=True)
    table.add_column("trainable\nparams", justify="right")
    table.add_column("FLOPs fwd\n(derived)", justify="right")
    table.add_column("FLOPs bwd\n(derived)", justify="right")
    table.add_column("saved activations\n(derived)", justify="right")
    table.add_column("peak\n(derived)", justify="right")
    table.add_column("peak\n(measured)", justify="right")
    table.add_column("error", justify="right")
    table.add_column("upload\n(derived)", justify="right")
    for config in profile.configs:
        table.add_row(
            safe(describe_states(config.block_states)), fmt_count(config.trainable_params),
            fmt_flops(config.flops_forward), fmt_flops(config.flops_backward), fmt_bytes(config.activation_bytes),
            fmt_bytes(config.peak_bytes_predicted), fmt_bytes(config.peak_bytes_measured),
            fmt_ratio(config.peak_bytes_predicted, config.peak_bytes_measured), fmt_bytes(config.upload_bytes),
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
