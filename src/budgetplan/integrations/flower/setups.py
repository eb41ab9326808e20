"""One prepared run setup (model, data, partition) per process, shared by budgetplan's ServerApp and ClientApp.

Preparing loads the model and tokenizes the data, seconds of work that Flower would repeat in every app
process. The cache holds one setup, for the plan and run config the process last asked for: a Ray actor
serving many virtual nodes prepares it once, and a process forked from a warm SuperExec (deploy/warm.py)
that prepared the app's setup before forking gets it for nothing. The number of rounds is not part of the
key (preparing does not read it): a run config that only changes num-server-rounds reuses the setup.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace

from budgetplan.execute import rounds
from budgetplan.execute.rounds import RunConfig, Setup
from budgetplan.plan import Plan

_SETUPS: dict[str, Setup] = {}


def prepared(plan: Plan, config: RunConfig) -> Setup:
    """rounds.prepare(plan, config), computed once per process for the same plan and settings."""
    settings = {k: v for k, v in asdict(config).items() if k != "rounds"}
    key = plan.digest() + json.dumps(settings, sort_keys=True, default=str)
    if key not in _SETUPS:
        _SETUPS.clear()  # one run per process at a time; do not keep an old run's data alive
        _SETUPS[key] = rounds.prepare(plan, config)
    setup = _SETUPS[key]
    return setup if setup.config == config else replace(setup, config=config)
