"""Build a Plan from a profile and the solver's per-class answers (budgetplan.solve.DeviceSolution / FleetSolution).

Only the answer's public fields are read (block_states, status, objective_value, binding); every cost in the
plan is composed here from the profile, so predicted numbers have one source.
"""

from __future__ import annotations

from dataclasses import replace

from budgetplan.plan.types import (
    ModelRef,
    Plan,
    PlanBudget,
    PlanClass,
    PlanContext,
    PredictedCosts,
    Rung,
    SolveAnswer,
    SolverSettings,
)
from budgetplan.profile.compose import compose
from budgetplan.profile.types import FROZEN_OUTSIDE, ModelProfile
from budgetplan.solve.caps import budget_of, flops_per_round, step_flops_cap
from budgetplan.solve.ladder import LADDER_RUNGS, ladder_states

DEVICE_FIELDS = ("name", "description", "memory_bytes", "total_memory_bytes", "flops_per_s", "uplink_bits_per_s",
                 "round_deadline_s", "upload_time_budget_s", "samples_per_round", "sources")


def trainable_names(profile: ModelProfile, block_states: tuple[str, ...],
                    train_embeddings: bool | None = None) -> tuple[str, ...]:
    """Parameter names (of budgetplan's task model) a configuration trains, in model order."""
    embeddings = profile.context.train_embeddings if train_embeddings is None else train_embeddings
    names = list(profile.pre_trainable_names) if embeddings else []
    for block, state in zip(profile.blocks, block_states):
        names += block.trainable_names.get(state, ())
    return tuple(names + list(profile.post_trainable_names))


def plan_budget(profile: ModelProfile, device) -> PlanBudget:
    """A device class's integer budgets in the profile's units (one profiled batch for flops_per_step)."""
    budget = budget_of(device)
    return PlanBudget(memory_bytes=budget.memory_bytes, flops_per_round=budget.flops_per_round,
                      flops_per_step=step_flops_cap(budget, profile.context.batch_size),
                      upload_bytes=budget.upload_bytes_per_round, samples_per_round=budget.samples_per_round)


def predicted_costs(profile: ModelProfile, block_states: tuple[str, ...], budget: PlanBudget | None) -> PredictedCosts:
    """The composed (derived) costs of a configuration; FLOPs per round need the class's samples per round."""
    cost = compose(profile, block_states)
    step = cost.flops_forward + cost.flops_backward
    per_round = None if budget is None else flops_per_round(step, budget.samples_per_round, profile.context.batch_size)
    return PredictedCosts(peak_bytes=cost.peak_bytes_predicted, flops_forward=cost.flops_forward,
                          flops_backward=cost.flops_backward, upload_bytes=cost.upload_bytes,
                          flops_per_round=per_round, activation_bytes=cost.activation_bytes,
                          trainable_params=cost.trainable_params, optimizer_state_bytes=cost.optimizer_state_bytes)


def _measured_peak(profile: ModelProfile, block_states: tuple[str, ...]) -> int | None:
    if profile.context.int8_embeddings:
        return None  # the profile's whole steps ran with full-precision embeddings
    for config in profile.configs:
        if tuple(config.block_states) == tuple(block_states) and config.peak_bytes_measured is not None:
            return config.peak_bytes_measured
    return None


def class_for_states(profile: ModelProfile, name: str, share: float, block_states, *, device=None,
                     budget: PlanBudget | None = None, train_embeddings: bool | None = None) -> PlanClass:
    """An active class training `block_states`, its costs composed from the profile (no solver answer)."""
    states = tuple(block_states)
    budget = plan_budget(profile, device) if budget is None and device is not None else budget
    embeddings = profile.context.train_embeddings if train_embeddings is None else train_embeddings
    return PlanClass(name=name, share=share, block_states=states,
                     trainable_names=trainable_names(profile, states, embeddings), train_embeddings=embeddings,
                     lora_alpha_per_rank=profile.context.lora_alpha_per_rank,
                     int8_embeddings=profile.context.int8_embeddings, budget=budget,
                     predicted=predicted_costs(profile, states, budget),
                     measured_peak_bytes=_measured_peak(profile, states),
                     device=None if device is None else device_entry(device))


def with_ladder(profile: ModelProfile, plan_class: PlanClass, rung_states) -> PlanClass:
    """The class with rungs 1.. training `rung_states` (largest first), each costed like the class's own plan."""
    rungs = []
    for states in rung_states:
        rung = class_for_states(profile, plan_class.name, plan_class.share, states, budget=plan_class.budget,
                                train_embeddings=plan_class.train_embeddings)
        rungs.append(Rung(rung.block_states, rung.trainable_names, rung.predicted, rung.measured_peak_bytes))
    return replace(plan_class, ladder=tuple(rungs))


def laddered(planner, plan_class: PlanClass, device, rungs: int = LADDER_RUNGS,
             upload_cap: int | None = None) -> PlanClass:
    """An active class with its ladder read off `planner` (budgetplan.solve.ProfilePlanner) under its device's
    budget; an inactive class unchanged."""
    if not plan_class.active or rungs < 2:
        return plan_class
    states = ladder_states(planner, budget_of(device), plan_class.block_states, rungs, upload_cap)
    return with_ladder(planner.profile, plan_class, states)


def class_from_solution(profile: ModelProfile, solution, device, share: float) -> PlanClass:
    """A class from the solver's answer (budgetplan.solve.DeviceSolution: block_states, status, objective)."""
    planned = class_for_states(profile, device.name, share, solution.block_states, device=device)
    budget, predicted = planned.budget, planned.predicted
    answer = SolveAnswer(status=solution.status, objective_value=solution.objective_value, binding=solution.binding,
                         slack_memory_bytes=budget.memory_bytes - predicted.peak_bytes,
                         slack_flops_per_round=budget.flops_per_round - predicted.flops_per_round,
                         slack_upload_bytes=budget.upload_bytes - predicted.upload_bytes)
    return replace(planned, answer=answer)


def inactive_class(profile: ModelProfile, device, share: float, reason: str | None) -> PlanClass:
    """A class that nothing fits: its clients sit out."""
    return PlanClass(name=device.name, share=share, block_states=(FROZEN_OUTSIDE,) * profile.num_blocks,
                     trainable_names=(), active=False, reason=reason, budget=plan_budget(profile, device),
                     device=device_entry(device))


def device_entry(device) -> dict:
    data = {name: getattr(device, name) for name in DEVICE_FIELDS}
    data["sources"] = list(device.sources)
    return data


def model_ref(profile: ModelProfile, spec: str | None = None) -> ModelRef:
    m = profile.model
    return ModelRef(name=m.name, fingerprint=m.fingerprint, num_blocks=m.num_blocks, spec=spec or m.source or m.name,
                    block_path=m.block_path, family=m.family, num_params=m.num_params,
                    library_versions=dict(m.library_versions))


def plan_context(profile: ModelProfile) -> PlanContext:
    c = profile.context
    return PlanContext(task=c.task, num_labels=c.num_labels, batch_size=c.batch_size, seq_len=c.seq_len,
                       image_size=c.image_size, dtype=c.dtype, optimizer=c.optimizer,
                       train_embeddings=c.train_embeddings, lora_ranks=tuple(c.lora_ranks),
                       lora_alpha_per_rank=c.lora_alpha_per_rank, lora_targets=tuple(c.lora_targets), device=c.device)


def build_plan(profile: ModelProfile, classes, solver: SolverSettings | None = None, model_spec: str | None = None,
               fleet: dict | None = None, label: str = "plan") -> Plan:
    """The plan for one model and its device classes (PlanClass values, e.g. from class_from_solution)."""
    return Plan(model=model_ref(profile, model_spec), context=plan_context(profile), classes=tuple(classes),
                label=label, solver=solver, fleet=fleet)


def plan_from_fleet(result, settings: SolverSettings, model_spec: str | None = None,
                    rungs: int = LADDER_RUNGS) -> Plan:
    """The plan of a fleet solve (budgetplan.solve.FleetSolution): the chosen model, every class (each with a
    ladder of up to `rungs` configurations, the plan included), the candidates. Under active fleet limits a
    lower rung uploads no more than its class's plan, so the plans' ingress stays within the limit."""
    chosen, fleet = result.chosen, result.fleet
    classes = []
    for member, solution, reason in zip(fleet.classes, chosen.solutions, chosen.reasons):
        if solution is None:
            classes.append(inactive_class(chosen.profile, member.device, member.share, reason))
            continue
        planned = class_from_solution(chosen.profile, solution, member.device, member.share)
        cap = planned.predicted.upload_bytes if result.limits.active else None
        classes.append(planned if chosen.planner is None else
                       laddered(chosen.planner, planned, member.device, rungs, cap))
    candidates = [{"model": c.profile.model.name, "fingerprint": c.profile.model.fingerprint, "score": c.score,
                   "classes": len(c.solutions), "classes_fit": sum(s is not None for s in c.solutions),
                   "chosen": c is chosen} for c in result.candidates]
    summary = {"name": fleet.name, "file": fleet.origin, "status": result.status, "solve_s": result.solve_s,
               "score": chosen.score, "candidates": candidates,
               "limits": {k: v for k, v in vars(result.limits).items() if v is not None}}
    if chosen.limit_use is not None:  # derived: what the chosen plans use of the limits, and whether they bind
        summary["limits_use"] = {k: v for k, v in vars(chosen.limit_use).items() if v is not None}
    return build_plan(chosen.profile, classes, settings, model_spec, summary)
