"""What the solver maximises: one linear form, sum(block weight x trainable) + params weight x trainable params.

- layers: every trainable block (trained or LoRA) counts 1, the paper's trained-layer count.
- params: trainable parameters of the whole configuration (pre and head included, as compose counts them).
- importance: a weight per block; a trainable block earns its weight. Weights come from a file or from the
  profile's `measurement` entries "importance.block.N"; a measured-importance step can fill either.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from budgetplan.errors import ConfigError
from budgetplan.profile.types import ModelProfile

LAYERS, PARAMS, IMPORTANCE = "layers", "params", "importance"
OBJECTIVES = (LAYERS, PARAMS, IMPORTANCE)
# Importance weights are floats; the model needs integers: weights are kept to 1/1000.
IMPORTANCE_SCALE = 1000
IMPORTANCE_KEY = "importance.block.{index}"


@dataclass(frozen=True)
class Objective:
    name: str
    block_weights: tuple[int, ...]  # integer weight per block, earned when the block is trainable
    params_weight: int  # 1 for "params", else 0
    scale: int  # the reported objective is the integer objective / scale

    def report(self, scaled: int) -> float | int:
        return scaled if self.scale == 1 else scaled / self.scale


def make_objective(name: str, profile: ModelProfile, importance: tuple[float, ...] | None = None) -> Objective:
    n = profile.num_blocks
    if name == LAYERS:
        return Objective(LAYERS, (1,) * n, 0, 1)
    if name == PARAMS:
        return Objective(PARAMS, (0,) * n, 1, 1)
    if name != IMPORTANCE:
        raise ConfigError(f"unknown objective '{name}'; use one of: {', '.join(OBJECTIVES)}")
    weights = importance if importance is not None else profile_importance(profile)
    if len(weights) != n:
        raise ConfigError(f"importance has {len(weights)} weights but the model has {n} blocks; give one per block")
    if any(w < 0 for w in weights):
        raise ConfigError("importance weights must be >= 0; rescale the negative ones")
    return Objective(IMPORTANCE, tuple(round(w * IMPORTANCE_SCALE) for w in weights), 0, IMPORTANCE_SCALE)


def profile_importance(profile: ModelProfile) -> tuple[float, ...]:
    keys = [IMPORTANCE_KEY.format(index=i) for i in range(profile.num_blocks)]
    if not all(k in profile.measurement for k in keys):
        raise ConfigError("objective 'importance' needs weights: the profile has no 'importance.block.N' "
                          "measurements; pass --importance FILE (weights = [one per block])")
    return tuple(float(profile.measurement[k]) for k in keys)


def read_importance(path: str | Path) -> tuple[float, ...]:
    """Weights from a TOML or JSON file holding `weights = [w0, w1, ...]`, one per block."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"importance file {path} does not exist; write weights = [one per block] to it")
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        weights = tuple(float(w) for w in data["weights"])
    except (ValueError, KeyError, TypeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"importance file {path} is malformed ({exc}); write weights = [one per block]") from None
    return weights
