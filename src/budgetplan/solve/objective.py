"""What the solver maximises: one linear form, sum(weight of each block's state) + params weight x trainable params.

- layers: the paper's trained-layer count. A fully trained block counts 1; a LoRA block counts the fraction
  of the block's parameters its adapters train (a rank-8 adapter on a MiniLM block is ~0.03 of a layer), so
  LoRA widens a plan only where full layers do not fit, and full fine-tuning wins whenever it fits.
- params: trainable parameters of the whole configuration (pre and head included, as compose counts them).
- importance: a weight per block; a trained block earns its weight, a LoRA block the same fraction as above. Weights come from a file or from the
  profile's `measurement` entries "importance.block.N"; a measured-importance step can fill either.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path

from budgetplan.errors import ConfigError
from budgetplan.profile.types import TRAINED, ModelProfile, is_trainable

LAYERS, PARAMS, IMPORTANCE = "layers", "params", "importance"
OBJECTIVES = (LAYERS, PARAMS, IMPORTANCE)
# Weights are fractions; the model needs integers: every weight is kept to 1/1000 of a layer.
WEIGHT_SCALE = 1000
IMPORTANCE_KEY = "importance.block.{index}"


@dataclass(frozen=True)
class Objective:
    name: str
    state_weights: tuple[dict[str, int], ...]  # per block: integer weight earned by each trainable state
    params_weight: int  # 1 for "params", else 0
    scale: int  # the reported objective is the integer objective / scale

    def report(self, scaled: int) -> float | int:
        return scaled if self.scale == 1 else scaled / self.scale


def state_fractions(block) -> dict[str, float]:
    """Per trainable state, the fraction of the block's parameters it trains (trained = 1, LoRA < 1)."""
    full = max(c.trainable_params for c in block.states[TRAINED].values()) if TRAINED in block.states else 0
    fractions = {}
    for state, by_boundary in block.states.items():
        if is_trainable(state):
            params = max(c.trainable_params for c in by_boundary.values())
            fractions[state] = 1.0 if state == TRAINED or not full else min(1.0, params / full)
    return fractions


def _weights(profile: ModelProfile, per_block: tuple[float, ...]) -> tuple[dict[str, int], ...]:
    """Integer weights; a trainable state never rounds to 0, so it still beats frozen."""
    return tuple({state: max(1, round(w * f * WEIGHT_SCALE)) if w > 0 else 0
                  for state, f in state_fractions(block).items()}
                 for block, w in zip(profile.blocks, per_block))


def make_objective(name: str, profile: ModelProfile, importance: tuple[float, ...] | None = None) -> Objective:
    n = profile.num_blocks
    if name == LAYERS:
        return Objective(LAYERS, _weights(profile, (1.0,) * n), 0, WEIGHT_SCALE)
    if name == PARAMS:
        return Objective(PARAMS, ({},) * n, 1, 1)
    if name != IMPORTANCE:
        raise ConfigError(f"unknown objective '{name}'; use one of: {', '.join(OBJECTIVES)}")
    weights = importance if importance is not None else profile_importance(profile)
    if len(weights) != n:
        raise ConfigError(f"importance has {len(weights)} weights but the model has {n} blocks; give one per block")
    if any(w < 0 for w in weights):
        raise ConfigError("importance weights must be >= 0; rescale the negative ones")
    return Objective(IMPORTANCE, _weights(profile, tuple(weights)), 0, WEIGHT_SCALE)


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
