"""The plan stage: one typed Plan from solve to run, verify and Flower (types.py), built from solver answers (build.py)."""

from budgetplan.plan.build import (
    build_plan,
    class_for_states,
    class_from_solution,
    inactive_class,
    plan_budget,
    plan_from_fleet,
    predicted_costs,
    trainable_names,
)
from budgetplan.plan.types import (
    PLAN_KIND,
    PLAN_SCHEMA_VERSION,
    ModelRef,
    Plan,
    PlanBudget,
    PlanClass,
    PlanContext,
    PredictedCosts,
    SolveAnswer,
    SolverSettings,
    class_from_dict,
    class_to_dict,
    lora_spec,
    plan_schema,
    read_plan,
    validate_plan,
    write_plan,
)

__all__ = ["PLAN_KIND", "PLAN_SCHEMA_VERSION", "ModelRef", "Plan", "PlanBudget", "PlanClass", "PlanContext",
           "PredictedCosts", "SolveAnswer", "SolverSettings", "build_plan", "class_for_states", "class_from_dict", "class_to_dict", "class_from_solution",
           "inactive_class", "lora_spec", "plan_budget", "plan_from_fleet", "plan_schema", "predicted_costs",
           "read_plan", "trainable_names", "validate_plan", "write_plan"]
