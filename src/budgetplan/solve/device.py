"""Solve one device class: the best configuration under its budgets, its slack, and a clear error when
no configuration fits."""

from __future__ import annotations

from budgetplan.profile.types import ModelProfile
from budgetplan.solve.classes import BUDGET_FIELDS, ProfileSolver
from budgetplan.solve.run import OPTIMAL, SolverParams
from budgetplan.solve.solution import BudgetUse, DeviceSolution, caps_of, describe, to_solution


def solve_device(profile: ModelProfile, device, objective: str = "layers", contiguous: bool = False,
                 time_limit_s: float = 10.0, seed: int = 0, workers: int = 1,
                 importance: tuple[float, ...] | None = None) -> DeviceSolution:
    """The best configuration of `profile` for one device class; InfeasibleError when none fits.

    Among configurations with the best objective the smallest predicted peak wins, then the first in the
    profile's state order from block 0 (so the answer is unique; solve/run.py)."""
    solver = ProfileSolver(profile, objective, contiguous, SolverParams(time_limit_s, seed, workers), importance)
    return solver.solve(device)


__all__ = ["BUDGET_FIELDS", "BudgetUse", "DeviceSolution", "OPTIMAL", "caps_of", "describe", "solve_device",
           "to_solution"]
