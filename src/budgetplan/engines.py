"""`budgetplan run --engine`: which trainer the one round loop (execute/loop.py) runs with.

This choice sits above execute/ and integrations/: the loop is handed its engine and never imports Flower.

Both engines take the same Plan, RunConfig and run directory and return the same RunResult; with the same
seed they sample the same clients, train the same tensors and end with the same global weights (to float
rounding). The embedded engine imports nothing from budgetplan.integrations; the flower engine is imported
only when asked for, after checking the extra is installed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from budgetplan.errors import ConfigError, ExtraMissingError
from budgetplan.execute import rounds
from budgetplan.execute.loop import Event
from budgetplan.execute.rounds import RunConfig, RunResult
from budgetplan.plan import Plan

ENGINES = ("embedded", "flower")
EXTRA_HINT = "the flower engine needs the extra: pip install 'budgetplan[flower]'"


def flower_extra_installed() -> bool:
    """flwr and ray both importable (run_simulation exits the process when ray is missing)."""
    return all(importlib.util.find_spec(name) is not None for name in ("flwr", "ray"))


def run_experiment(engine: str, plan: Plan, config: RunConfig, run_dir: str | Path, resume: bool = False,
                   on_event: Event | None = None) -> RunResult:
    """rounds.run on the chosen engine: 'embedded' (in-process) or 'flower' (Flower simulation on Ray)."""
    if engine == "embedded":
        return rounds.run(plan, config, run_dir, resume=resume, on_event=on_event)
    if engine != "flower":
        raise ConfigError(f"--engine {engine}: unknown engine; use one of: {', '.join(ENGINES)}")
    from budgetplan.integrations.flower.settings import refuse_on_flower  # imports no flwr

    refuse_on_flower(config)  # settings Flower cannot honour, said before the extra is even looked for
    if not flower_extra_installed():
        raise ExtraMissingError(EXTRA_HINT)
    from budgetplan.integrations.flower.simulation import run_on_flower  # lazy: flwr/ray are an optional extra

    return run_on_flower(plan, config, run_dir, resume=resume, on_event=on_event)
