"""The training recipe a plan carries: how the server combines updates and how clients train (the plan's "recipe").

Every field is optional: a field the plan author left out (None) means "the run's default", and an option given
to `run`, `export` or a Flower app's run config overrides what the plan says. The defaults are single named
constants below, so the benchmark's verdict changes one line.

- server_optimizer: fedavg (the layer-wise average becomes the model), fedavgm (server momentum, Hsu et al. 2019)
  or fedadam (Reddi et al. 2021, "Adaptive Federated Optimization"); server_lr, server_momentum (FedAvgM's beta,
  FedAdam's beta1), server_beta2 and server_tau are their parameters (execute/aggregate.py has the formulas).
- aggregation_weights: each client's weight in the layer-wise mean: examples (its stored data size), samples (the
  samples it trained this round: steps x batch) or uniform.
- client_optimizer_state: fresh (a new optimizer every round) or keep (a client's optimizer state for the tensors
  it trains carries over to its next round).
- lr, local_steps, lora_lr_scale, head_lr_scale: the clients' local training.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields

from budgetplan.errors import PlanError

SERVER_OPTIMIZERS = ("fedavg", "fedavgm", "fedadam")
AGGREGATION_WEIGHTS = ("examples", "samples", "uniform")
CLIENT_OPTIMIZER_STATES = ("fresh", "keep")
# Today's behaviour, the default until the accuracy benchmark shows another recipe wins (issue 20).
DEFAULT_SERVER_OPTIMIZER = "fedavg"
DEFAULT_AGGREGATION_WEIGHTS = "examples"
DEFAULT_CLIENT_OPTIMIZER_STATE = "fresh"
# The plan's aggregation.weight for each choice (examples keeps its old name, num_examples)
WEIGHT_NAMES = {"examples": "num_examples", "samples": "samples", "uniform": "uniform"}

_CHOICES = {"server_optimizer": SERVER_OPTIMIZERS, "aggregation_weights": AGGREGATION_WEIGHTS,
            "client_optimizer_state": CLIENT_OPTIMIZER_STATES}
_FRACTIONS = ("server_momentum", "server_beta2")  # in [0, 1)
_RATES = ("server_lr", "server_tau", "lr", "lora_lr_scale", "head_lr_scale")  # > 0


@dataclass(frozen=True)
class Recipe:
    """The plan's training recipe; None: not set by the plan (the run's default applies)."""

    server_optimizer: str | None = None
    server_lr: float | None = None
    server_momentum: float | None = None
    server_beta2: float | None = None
    server_tau: float | None = None
    aggregation_weights: str | None = None
    client_optimizer_state: str | None = None
    lr: float | None = None
    local_steps: int | None = None
    lora_lr_scale: float | None = None
    head_lr_scale: float | None = None

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                _check(f.name, value)

    def to_dict(self) -> dict:
        """The plan's "recipe" section: only the fields the plan sets."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, data: Mapping | None) -> Recipe:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (data or {}).items() if k in names})


def _check(name: str, value) -> None:
    fix = "; fix the plan's recipe or solve again with valid recipe options"
    if name in _CHOICES:
        if value not in _CHOICES[name]:
            raise PlanError(f"recipe {name} {value!r} is unknown; use one of: {', '.join(_CHOICES[name])}{fix}")
        return
    if name == "local_steps":
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise PlanError(f"recipe local_steps = {value!r} must be a whole number >= 1{fix}")
        return
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise PlanError(f"recipe {name} = {value!r} must be a finite number{fix}")
    if name in _FRACTIONS and not 0 <= value < 1:
        raise PlanError(f"recipe {name} = {value!r} must be in [0, 1){fix}")
    if name in _RATES and value <= 0:
        raise PlanError(f"recipe {name} = {value!r} must be > 0{fix}")
