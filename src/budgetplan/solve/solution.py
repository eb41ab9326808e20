"""What one device class gets: the chosen configuration with its use of every budget and its slack,
re-composed and checked against the caps before it is returned."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from budgetplan.errors import PlanError
from budgetplan.profile.types import ConfigCost, ModelProfile, is_trainable
from budgetplan.solve.caps import (
    BUDGET_UNITS,
    COMPUTE,
    MEMORY,
    UPLOAD,
    Budget,
    flops_per_round,
    step_flops_cap,
)
from budgetplan.solve.objective import Objective

OPTIMAL = "OPTIMAL"  # every answer is proved: the frontier holds every configuration that can be an answer


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
    status: str  # OPTIMAL: proved best (the frontier planner's answers always are)
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


@functools.lru_cache(maxsize=4096)  # the same few rows are named in many classes' messages
def describe(block_states: tuple[str, ...]) -> str:
    trainable = [i for i, s in enumerate(block_states) if is_trainable(s)]
    if not trainable:
        return "head only"
    return f"{len(trainable)} of {len(block_states)} blocks trainable"


def check_row(states: tuple[str, ...], objective_value: int, cost: ConfigCost, objective: Objective,
              name: str) -> None:
    """What does not depend on the class: `cost` is the cost of `states` and its objective is the planner's.
    Done once per planned configuration (many classes share one)."""
    value = objective.value(states, cost.trainable_params)
    if tuple(cost.block_states) != tuple(states) or value != objective_value:
        raise PlanError(f"internal check failed for {name}: the planned configuration {states} composes to "
                        f"{cost.block_states} with objective {value} (planned {objective_value}); please report it")


def solution_for(states: tuple[str, ...], objective_value: int, cost: ConfigCost, device, profile: ModelProfile,
                 objective: Objective, contiguous: bool, budget: Budget, caps: tuple[int, int, int],
                 unconstrained: int, solve_s: float) -> DeviceSolution:
    """The answer for one class from a checked row (check_row): PlanError if its composed costs break a cap."""
    flops_per_step = cost.flops_forward + cost.flops_backward
    if cost.peak_bytes_predicted > caps[0] or flops_per_step > caps[1] or cost.upload_bytes > caps[2]:
        raise PlanError(f"internal check failed for {device.name}: the planned configuration {states} composes to "
                        f"peak {cost.peak_bytes_predicted} B, {flops_per_step} FLOPs, upload {cost.upload_bytes} B "
                        f"(caps {caps}); please report it")
    per_round = flops_per_round(flops_per_step, budget.samples_per_round, profile.context.batch_size)
    uses = (BudgetUse(MEMORY, cost.peak_bytes_predicted, budget.memory_bytes, BUDGET_UNITS[MEMORY]),
            BudgetUse(COMPUTE, per_round, budget.flops_per_round, BUDGET_UNITS[COMPUTE]),
            BudgetUse(UPLOAD, cost.upload_bytes, budget.upload_bytes_per_round, BUDGET_UNITS[UPLOAD]))
    binding = "none" if objective_value >= unconstrained else min(uses, key=lambda u: u.slack / u.limit).name
    return DeviceSolution(
        device=device, model_name=profile.model.name, fingerprint=profile.model.fingerprint,
        objective=objective.name, objective_value=objective.report(objective_value), contiguous=contiguous,
        status=OPTIMAL, block_states=tuple(states), peak_bytes=cost.peak_bytes_predicted,
        flops_per_round=per_round, upload_bytes_per_round=cost.upload_bytes,
        trainable_params=cost.trainable_params, budgets=uses, binding=binding, solve_s=solve_s,
    )
