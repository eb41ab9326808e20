"""What one device class gets: the chosen configuration with its use of every budget and its slack."""

from __future__ import annotations

from dataclasses import dataclass

from budgetplan.profile.types import ModelProfile, is_trainable
from budgetplan.solve.caps import (
    BUDGET_NAMES,
    BUDGET_UNITS,
    COMPUTE,
    MEMORY,
    UPLOAD,
    Budget,
    flops_per_round,
    step_flops_cap,
)
from budgetplan.solve.objective import Objective
from cpsat_baseline.run import Outcome


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
