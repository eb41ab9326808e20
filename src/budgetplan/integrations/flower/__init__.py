"""Flower integration (optional extra `budgetplan[flower]`): plans run on Flower's Message API.

Nothing here imports flwr at package import time, so budgetplan works without the extra; the submodules
that need it call `require_flower()` first and say how to install it.
"""

from __future__ import annotations

import importlib.util
import os

from budgetplan.errors import BudgetplanError

# Flower reports usage to its servers unless told not to; read when flwr is first imported, i.e. after this.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")

INSTALL_HINT = 'pip install "budgetplan[flower]" (flwr[simulation]==1.42.0, ray==2.55.1)'


class FlowerMissingError(BudgetplanError):
    """The optional Flower extra is not installed."""


def flower_available() -> bool:
    return importlib.util.find_spec("flwr") is not None


def require_flower(what: str = "the Flower engine") -> None:
    if not flower_available():
        raise FlowerMissingError(f"{what} needs Flower, which is not installed; install it with: {INSTALL_HINT}")


def run_on_flower(*args, **kwargs):
    """`budgetplan run --engine flower`: the embedded executor's run(), on Flower's Ray simulation engine.

    Same arguments and result as budgetplan.execute.rounds.run; see simulation.run_on_flower.
    """
    require_flower("run --engine flower")
    from budgetplan.integrations.flower.simulation import run_on_flower as run

    return run(*args, **kwargs)
