"""Pick per device class which blocks to train (OR-Tools CP-SAT), and one model for a whole fleet."""

from budgetplan.solve.device import BudgetUse, DeviceSolution, solve_device
from budgetplan.solve.fleet import Fleet, FleetClass, FleetSolution, ModelChoice, read_fleet, solve_fleet

__all__ = ["BudgetUse", "DeviceSolution", "Fleet", "FleetClass", "FleetSolution", "ModelChoice", "read_fleet",
           "solve_device", "solve_fleet"]
