"""Deployment tooling for an exported Flower app: a local SuperLink/SuperNode supervisor (local.py) and the warm
SuperExec launcher (warm.py) that forks app processes from one prepared interpreter.

The narrow entry the CLI (`budgetplan flower-local`) calls: `start_local` and `stop_recorded`. The Flower adapter
itself (integrations/flower: client, server, trainer, records, settings, simulation, export) imports nothing
from here.
"""

from __future__ import annotations

from budgetplan.integrations.flower.deploy.local import LocalFederation, start_local, stop_recorded

__all__ = ["LocalFederation", "start_local", "stop_recorded"]
