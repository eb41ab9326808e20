"""Solve one device class: the best configuration under its budgets, its slack, and a clear error when
no configuration fits."""

from __future__ import annotations

from dataclasses import dataclass

from budgetplan.errors import InfeasibleError
from budgetplan.profile.types import ModelProfile, is_trainable
from budgetplan.solve.budget import (
    BUDGET_NAMES,
    BUDGET_UNITS,
    COMPUTE,
    MEMORY,
    UPLOAD,
    Budget,
    budget_of,
    flops_per_round,
    format_quantity,
    step_flops_cap,
)
from budgetplan.solve.cpmodel import StateModel, build_state_model
from budgetplan.solve.objective import Objective, make_objective
from budgetplan.solve.run import OPTIMAL, Outcome, SolverParams, solve_best, solve_min


@dataclass(frozen=True)
class BudgetUse:
    name: str  # memory | compute | upload
    used: int
    limit: int
    unit: str

    @property
    def slack(self) -> int:
        return self.limit - self.used


@dataclass(frozen=True)
class DeviceSolution:
    device: object  # budgetplan.devices.DeviceClass
    model_name: str
    fingerprint: str
    objective: str
    objective_value: float | int  # layers, parameters or importance of the chosen configuration
    contiguous: bool
    status: str  # OPTIMAL (proved) or FEASIBLE (time limit hit first)
    block_states: tuple[str, ...]
    peak_bytes: int  # predicted, derived from the profile's parts
    flops_per_round: int
    upload_bytes_per_round: int
    trainable_params: int
    budgets: tuple[BudgetUse, ...]
    binding: str  # the budget with the least relative slack, or "none" when no budget limits the objective
    solve_s: float

    @property
    def trained_blocks(self) -> int:
        return sum(is_trainable(s) for s in self.block_states)


def caps_of(budget: Budget, profile: ModelProfile) -> dict[str, int]:
    """Budget caps in the model's units: peak bytes, FLOPs of one profiled batch, upload bytes."""
    return {MEMORY: budget.memory_bytes, COMPUTE: step_flops_cap(budget, profile.context.batch_size),
            UPLOAD: budget.upload_bytes_per_round}


def describe(block_states: tuple[str, ...]) -> str:
    trainable = [i for i, s in enumerate(block_states) if is_trainable(s)]
    if not trainable:
        return "head only"
    return f"{len(trainable)} of {len(block_states)} blocks trainable"


def to_solution(outcome: Outcome, device, profile: ModelProfile, objective: Objective, contiguous: bool,
                budget: Budget, unconstrained: int) -> DeviceSolution:
    used = {MEMORY: outcome.peak_bytes, UPLOAD: outcome.upload_bytes,
            COMPUTE: flops_per_round(outcome.flops_per_step, budget.samples_per_round, profile.context.batch_size)}
    uses = tuple(BudgetUse(n, used[n], budget.limit(n), BUDGET_UNITS[n]) for n in BUDGET_NAMES)
    binding = "none" if outcome.primary >= unconstrained else min(uses, key=lambda u: u.slack / u.limit).name
    return DeviceSolution(
        device=device, model_name=profile.model.name, fingerprint=profile.model.fingerprint,
        objective=objective.name, objective_value=objective.report(outcome.primary), contiguous=contiguous,
        status=outcome.status, block_states=outcome.block_states, peak_bytes=outcome.peak_bytes,
        flops_per_round=used[COMPUTE], upload_bytes_per_round=outcome.upload_bytes,
        trainable_params=outcome.trainable_params, budgets=uses, binding=binding, solve_s=outcome.wall_s,
    )


# The device-file fields that set each budget, named in the fix.
BUDGET_FIELDS = {MEMORY: "memory_bytes", COMPUTE: "flops_per_s or round_deadline_s",
                 UPLOAD: "uplink_bits_per_s or upload_time_budget_s"}


def infeasible_message(sm: StateModel, device_name: str, budget: Budget, profile: ModelProfile,
                       params: SolverParams) -> str:
    """Name the budget no configuration meets and the least it needs, with the other budgets held."""
    caps = caps_of(budget, profile)
    needs = []
    for name in BUDGET_NAMES:
        cheapest = solve_min(sm, {**caps, name: None}, name, params)
        if cheapest.found:
            needs.append(f"the cheapest plan ({describe(cheapest.block_states)}) needs "
                         f"{_amount(name, cheapest, budget, profile)}; the budget is "
                         f"{format_quantity(name, budget.limit(name))}; raise {BUDGET_FIELDS[name]}")
    if needs:
        return f"{device_name}: " + "; or: ".join(needs) + " (or pick a smaller model)"
    least = {name: solve_min(sm, {}, name, params) for name in BUDGET_NAMES}  # nothing else held
    over = [n for n in BUDGET_NAMES if _value(n, least[n], budget, profile) > budget.limit(n)] or list(BUDGET_NAMES)
    over = [f"{n} needs {_amount(n, least[n], budget, profile)} (budget {format_quantity(n, budget.limit(n))})"
            for n in over]
    return (f"{device_name}: no plan meets the budgets together; at the least " + ", ".join(over)
            + "; raise the budgets in the device file or pick a smaller model")


def _value(name: str, outcome: Outcome, budget: Budget, profile: ModelProfile) -> int:
    if name == COMPUTE:
        return flops_per_round(outcome.flops_per_step, budget.samples_per_round, profile.context.batch_size)
    return outcome.peak_bytes if name == MEMORY else outcome.upload_bytes


def _amount(name: str, outcome: Outcome, budget: Budget, profile: ModelProfile) -> str:
    return format_quantity(name, _value(name, outcome, budget, profile))


def unconstrained_primary(sm: StateModel, params: SolverParams) -> int:
    """The best objective with no budget at all (to tell whether any budget binds)."""
    return solve_best(sm, {}, params).primary


def solve_device(profile: ModelProfile, device, objective: str = "layers", contiguous: bool = False,
                 time_limit_s: float = 10.0, seed: int = 0, workers: int = 1,
                 importance: tuple[float, ...] | None = None) -> DeviceSolution:
    """The best configuration of `profile` for one device class; InfeasibleError when none fits."""
    goal = make_objective(objective, profile, importance)
    params = SolverParams(time_limit_s, seed, workers)
    sm = build_state_model(profile, goal, contiguous)
    budget = budget_of(device)
    outcome = solve_best(sm, caps_of(budget, profile), params)
    if not outcome.found:
        if outcome.status != "INFEASIBLE":
            raise InfeasibleError(f"{device.name}: no plan found within {time_limit_s:g} s; raise --time-limit")
        raise InfeasibleError(infeasible_message(sm, device.name, budget, profile, params))
    return to_solution(outcome, device, profile, goal, contiguous, budget, unconstrained_primary(sm, params))


__all__ = ["BudgetUse", "DeviceSolution", "OPTIMAL", "solve_device"]
