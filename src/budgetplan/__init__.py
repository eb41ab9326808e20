"""budgetplan: measure, plan and verify layer-wise federated fine-tuning of small Transformers on weak devices.

The Python API (each name is what a command runs; see budgetplan.api for the details):

    import budgetplan
    task = budgetplan.load(my_bert_model, num_labels=3)     # in memory, model.pt, HF directory or bundled name
    profile = budgetplan.profile_model(task, sample_batch)         # ModelProfile: measured per block and state
    plan = budgetplan.solve_plan(profile, ["jetson-nano", "raspberry-pi-4-4gb"])   # Plan (classes may sit out)
    model = budgetplan.apply(plan, task, "jetson-nano")      # frozen + LoRA in place; model(**batch).loss
    merged = budgetplan.layerwise_mean(global_state, [(model.upload(), num_examples), ...])
    budgetplan.write_plan(plan, "plan.json"); plan = budgetplan.read_plan("plan.json")
    server_app, client_app = budgetplan.flower_apps("plan.json")   # needs the extra budgetplan[flower]

Importing budgetplan is light: torch, transformers and OR-Tools load on first use of a function. (The names are
profile_model and solve_plan because budgetplan.profile and budgetplan.solve are the stages' subpackages.)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from budgetplan.version import __version__

# public name -> (module, attribute), imported on first access (PEP 562)
_LAZY = {
    "load": ("budgetplan.api", "load"),
    "profile_model": ("budgetplan.api", "profile_model"),
    "device": ("budgetplan.api", "device"),
    "solve_plan": ("budgetplan.api", "solve_plan"),
    "apply": ("budgetplan.api", "apply"),
    "layerwise_mean": ("budgetplan.api", "layerwise_mean"),
    "flower_apps": ("budgetplan.api", "flower_apps"),
    "read_plan": ("budgetplan.plan", "read_plan"),
    "write_plan": ("budgetplan.plan", "write_plan"),
    "read_profile": ("budgetplan.profile.io", "read_profile"),
    "write_profile": ("budgetplan.profile.io", "write_profile"),
    "Plan": ("budgetplan.plan", "Plan"),
    "PlanClass": ("budgetplan.plan", "PlanClass"),
    "ModelProfile": ("budgetplan.profile.types", "ModelProfile"),
    "DeviceClass": ("budgetplan.devices", "DeviceClass"),
    "LoadedModel": ("budgetplan.models.load", "LoadedModel"),
    "PlannedModel": ("budgetplan.execute.apply", "PlannedModel"),
    "BudgetplanError": ("budgetplan.errors", "BudgetplanError"),
}
__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time these load lazily
    from budgetplan.api import apply, device, flower_apps, layerwise_mean, load, profile_model, solve_plan  # noqa: F401
    from budgetplan.devices import DeviceClass  # noqa: F401
    from budgetplan.errors import BudgetplanError  # noqa: F401
    from budgetplan.execute.apply import PlannedModel  # noqa: F401
    from budgetplan.models.load import LoadedModel  # noqa: F401
    from budgetplan.plan import Plan, PlanClass, read_plan, write_plan  # noqa: F401
    from budgetplan.profile.io import read_profile, write_profile  # noqa: F401
    from budgetplan.profile.types import ModelProfile  # noqa: F401


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'budgetplan' has no attribute '{name}'")
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
