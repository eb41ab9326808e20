"""Pick per device class which blocks to train (OR-Tools CP-SAT), and one model for a whole fleet."""

from budgetplan.solve.device import BudgetUse, DeviceSolution, solve_device

__all__ = ["BudgetUse", "DeviceSolution", "solve_device"]
