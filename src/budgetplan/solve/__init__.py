"""Pick per device class which blocks to train (an exact configuration frontier per model), and one model
for a whole fleet (CP-SAT only where fleet-wide limits couple the classes)."""

from budgetplan.solve.coupling import FleetLimits
from budgetplan.solve.fleet import FleetSolution, ModelChoice, solve_fleet
from budgetplan.solve.fleet_file import Fleet, FleetClass, read_fleet, read_fleet_profiles
from budgetplan.solve.planner import ProfilePlanner, solve_device
from budgetplan.solve.solution import BudgetUse, DeviceSolution

__all__ = ["BudgetUse", "DeviceSolution", "Fleet", "FleetClass", "FleetLimits", "FleetSolution", "ModelChoice",
           "ProfilePlanner", "read_fleet", "read_fleet_profiles", "solve_device", "solve_fleet"]
