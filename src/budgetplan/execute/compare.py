"""Side by side: the budgetplan plan against the usual alternatives, same fleet, budgets, data, seeds, rounds.

Schemes: (a) budgetplan — the plan as solved; (b) caff — the published CAFF scheme, the last k blocks trained
with the largest k that fits each class; (c) lora — LoRA on all blocks where it fits; (d) full — full
fine-tuning where it fits; (e) head — the head only. In (b)-(e) a class that cannot fit the configuration
sits out, as it would in practice. "Fits" uses the profile's composed costs against every budget the class has;
where the profile measured activation recomputation, a configuration that does not fit as it is is tried once
more with every trained block recomputing (what a user gets from gradient checkpointing the whole model), so
the baselines are not denied a memory saving that budgetplan's plans may use.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from budgetplan.errors import ConfigError, PlanError
from budgetplan.execute.rounds import RunConfig, RunResult, run
from budgetplan.execute.schemes import LABELS, SCHEMES
from budgetplan.execute.setup import trainable_names_of
from budgetplan.models.load import LoadedModel
from budgetplan.plan import Plan, PlanClass, predicted_costs
from budgetplan.profile.types import FROZEN, TRAINED, ModelProfile, is_trainable, lora_state, recompute_state


def within_budget(profile: ModelProfile, states: tuple[str, ...], plan: PlanClass) -> bool:
    """The composed costs of `states` within every budget the class has (a class without budgets: always)."""
    budget = plan.budget
    if budget is None:
        return True
    cost = predicted_costs(profile, states, budget)
    return (cost.peak_bytes <= budget.memory_bytes and cost.flops_per_step <= budget.flops_per_step
            and cost.upload_bytes <= budget.upload_bytes)


def scheme_states(profile: ModelProfile, scheme: str, plan: PlanClass, lora_rank: int) -> tuple[str, ...] | None:
    """The configuration a scheme gives a class, or None when it does not fit (the class sits out)."""
    n = profile.num_blocks
    if scheme == "caff":
        candidates = [(FROZEN,) * (n - k) + (TRAINED,) * k for k in range(n, -1, -1)]
    else:
        candidates = [{"lora": (lora_state(lora_rank),) * n, "full": (TRAINED,) * n, "head": (FROZEN,) * n}[scheme]]
    for states in candidates:
        fitting = fitting_variant(profile, states, plan)
        if fitting is not None:
            return fitting
    return None


def fitting_variant(profile: ModelProfile, states: tuple[str, ...], plan: PlanClass) -> tuple[str, ...] | None:
    """`states` if it fits the class, else its whole-model recompute variant if the profile has it and it fits."""
    if within_budget(profile, states, plan):
        return states
    recomputed = tuple(recompute_state(s) if is_trainable(s) else s for s in states)
    offered = all(s in profile.blocks[i].states for i, s in enumerate(recomputed) if is_trainable(s))
    if recomputed != states and offered and within_budget(profile, recomputed, plan):
        return recomputed
    return None


def alternative_plan(base: Plan, profile: ModelProfile, scheme: str, template: LoadedModel,
                     lora_rank: int) -> Plan:
    """The base plan's fleet and budgets with every class configured by `scheme`."""
    if scheme == "budgetplan":
        return base
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown scheme '{scheme}'; use: {', '.join(SCHEMES)}")
    if profile.model.fingerprint != base.model.fingerprint:
        raise PlanError("the profile is for another model than the plan; profile the plan's model")
    if scheme == "lora" and lora_rank not in profile.context.lora_ranks:
        raise ConfigError(f"--lora-rank {lora_rank} was not profiled; profiled ranks: "
                          f"{', '.join(map(str, profile.context.lora_ranks))}")
    classes = []
    for c in base.classes:
        states = scheme_states(profile, scheme, c, lora_rank)
        if states is None:
            classes.append(replace(c, active=False, reason=f"{scheme}: its configuration does not fit this class",
                                   block_states=(FROZEN,) * profile.num_blocks, trainable_names=(), predicted=None,
                                   measured_peak_bytes=None, answer=None))
            continue
        classes.append(replace(c, active=True, reason=None, block_states=states, train_embeddings=False,
                               trainable_names=trainable_names_of(template, states),
                               predicted=predicted_costs(profile, states, c.budget), measured_peak_bytes=None,
                               answer=None))
    return base.with_classes(classes, scheme)


@dataclass(frozen=True)
class SchemeSummary:
    scheme: str
    seeds: tuple[int, ...]
    final_accuracy: tuple[float, ...]
    best_accuracy: tuple[float, ...]
    rounds_to_target: tuple[int | None, ...]
    peak_bytes_per_class: dict  # class -> measured peak (None: sat out)
    flops_per_round: tuple[float | None, ...]  # mean over rounds, measured
    upload_bytes_per_round: tuple[float, ...]
    participation: float  # share of clients whose class could take part
    block_states: dict  # class -> states (None: sat out)


def summarize(scheme: str, plan: Plan, results: list[RunResult], seeds, target: float | None) -> SchemeSummary:
    def first_reach(history):
        return next((r.round for r in history if target is not None and r.accuracy >= target), None)

    def mean_flops(history):
        values = [r.flops_measured for r in history if r.flops_measured is not None]
        return float(np.mean(values)) if values else None

    first = results[0]
    peaks = {c.name: m.peak_bytes for c in plan.classes if (m := first.measurements.get(c.name)) is not None}
    active = {c.name for c in plan.classes if c.active and peaks.get(c.name) is not None
              and (c.budget is None or peaks[c.name] <= c.budget.memory_bytes)}
    share = sum(c.share for c in plan.classes if c.name in active) / max(sum(c.share for c in plan.classes), 1e-12)
    return SchemeSummary(
        scheme=scheme, seeds=tuple(seeds),
        final_accuracy=tuple(r.history[-1].accuracy for r in results),
        best_accuracy=tuple(max(h.accuracy for h in r.history) for r in results),
        rounds_to_target=tuple(first_reach(r.history) for r in results),
        peak_bytes_per_class={c.name: peaks.get(c.name) if c.active else None for c in plan.classes},
        flops_per_round=tuple(mean_flops(r.history) for r in results),
        upload_bytes_per_round=tuple(float(np.mean([h.upload_bytes for h in r.history])) for r in results),
        participation=share,
        block_states={c.name: list(c.block_states) if c.active else None for c in plan.classes},
    )


def run_compare(base: Plan, profile: ModelProfile, template: LoadedModel, config: RunConfig,
                seeds: tuple[int, ...], out_dir: str | Path, schemes: tuple[str, ...] = SCHEMES,
                target: float | None = None, lora_rank: int | None = None,
                on_event: Callable[[str, dict], None] | None = None) -> list[SchemeSummary]:
    """Run every scheme for every seed (resuming finished or stopped runs) and summarize them."""
    on_event = on_event or (lambda kind, payload: None)
    out_dir = Path(out_dir)
    rank = lora_rank or profile.context.lora_ranks[0]
    summaries = []
    for scheme in schemes:
        plan = alternative_plan(base, profile, scheme, template, rank)
        results = []
        for seed in seeds:
            on_event("scheme", {"scheme": scheme, "seed": seed})
            run_dir = out_dir / scheme / f"seed{seed}"
            resume = (run_dir / "checkpoint.pt").exists()
            results.append(run(plan, replace(config, seed=seed), run_dir, resume=resume, on_event=on_event))
        summaries.append(summarize(scheme, plan, results, seeds, target))
    (out_dir / "compare.json").write_text(json.dumps([s.__dict__ for s in summaries], indent=1) + "\n")
    return summaries


def mean_std(values) -> tuple[float | None, float | None]:
    clean = [v for v in values if v is not None]
    if not clean:
        return None, None
    return float(np.mean(clean)), float(np.std(clean))


def table_rows(summaries: list[SchemeSummary]) -> list[dict]:
    """Rows for report.run_report.compare_table."""
    rows = []
    for s in summaries:
        peaks = ", ".join(f"{k} {'-' if v is None else f'{v / 2**20:.1f}'}" for k, v in s.peak_bytes_per_class.items())
        flops = mean_std([None if f is None else f / 1e9 for f in s.flops_per_round])
        rows.append({"scheme": LABELS.get(s.scheme, s.scheme), "final_accuracy": mean_std(s.final_accuracy),
                     "best_accuracy": mean_std(s.best_accuracy), "rounds_to_target": list(s.rounds_to_target),
                     "peak_per_class": peaks, "gflops_per_round": flops,
                     "upload_mib_per_round": mean_std([u / 2**20 for u in s.upload_bytes_per_round]),
                     "participation": s.participation})
    return rows
