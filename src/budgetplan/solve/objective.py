"""What the solver maximises: one linear form, sum(weight of each block's state) + params weight x trainable params.

- layers: the paper's trained-layer count. A fully trained block counts 1; a LoRA block counts the fraction
  of the block's parameters its adapters train (a rank-8 adapter on a MiniLM block is ~0.03 of a layer), so
  LoRA widens a plan only where full layers do not fit, and full fine-tuning wins whenever it fits.
- params: trainable parameters of the whole configuration (pre and head included, as compose counts them).
- importance: a value per (block, state). In order of precedence: a weights file (`--importance`, one weight
  per block: a trained block earns its weight, a LoRA block the same fraction as above); the profile's measured
  importance (`ModelProfile.importance`, one dict per block, state -> value; a state missing from a block's
  dict, and every frozen state, is worth 0); the profile's `measurement` entries "importance.block.N".
Values are kept as integers: layers and per-block weights to 1/WEIGHT_SCALE, measured values to
1/MEASURED_SCALE; a positive value never rounds to 0, so a state that earns something still beats frozen.
A "+recompute" state earns what its base state earns (the same weights are trained; a measured importance
missing for the recompute state is its base state's). Where the profile has recompute states, every weight is
multiplied by the tie factor blocks + 1 and each earning block that does not recompute adds 1: among plans
equal in the objective the solver takes the most blocks that do not recompute (recomputation costs FLOPs and
lowers the peak, so the peak tie-break alone would recompute wherever it could). The tie-break lives in the
integer objective itself, so any planner ordering by it (solve/frontier.py: objective, then peak, then state
order) applies it. report() divides the tie factor back out, so reported values are those of the base objective.
A "+int8" state earns what its full-precision state earns (the same tensors train). Where the profile has +int8
states, the tie factor grows by another `blocks` and every block whose weights are not quantised (frozen
included) adds 1: among plans equal in the objective the solver quantises the fewest blocks (int8 weights cost
a little accuracy and a dequantisation per weight; the peak tie-break alone would quantise every frozen block).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from budgetplan.errors import ConfigError
from budgetplan.files import read_json, read_toml, refuse_other_kind
from budgetplan.profile.types import TRAINED, ModelProfile, is_quantized, is_recompute, is_trainable, parse_state
from budgetplan.validate import check_magnitudes

LAYERS, PARAMS, IMPORTANCE, COVERAGE = "layers", "params", "importance", "coverage"
OBJECTIVES = (LAYERS, PARAMS, IMPORTANCE, COVERAGE)
# Weights are fractions; the model needs integers: every weight is kept to 1/1000 of a layer.
WEIGHT_SCALE = 1000
MEASURED_SCALE = 10**6
IMPORTANCE_KEY = "importance.block.{index}"


@dataclass(frozen=True)
class Objective:
    name: str
    state_weights: tuple[dict[str, int], ...]  # per block: integer weight earned by each trainable state
    params_weight: int  # RECOMPUTE_TIE for "params", else 0
    scale: int  # the reported objective is (the integer objective // tie) / scale
    tie: int = 1  # 1 + blocks per tie-break the profile needs (recompute, int8); see the module docstring

    def report(self, scaled: int) -> float | int:
        scaled = int(scaled) // self.tie
        return scaled if self.scale == 1 else scaled / self.scale

    def value(self, block_states: tuple[str, ...], trainable_params: int) -> int:
        """The integer objective of a configuration (trainable_params: of the whole configuration; tie included)."""
        return sum(w.get(s, 0) for w, s in zip(self.state_weights, block_states)) + self.params_weight * trainable_params


def state_fractions(block) -> dict[str, float]:
    """Per trainable state, the fraction of the block's parameters it trains (trained = 1, LoRA < 1)."""
    full = max(c.trainable_params for c in block.states[TRAINED].values()) if TRAINED in block.states else 0
    fractions = {}
    for state, by_boundary in block.states.items():
        if is_trainable(state):
            params = max(c.trainable_params for c in by_boundary.values())
            base = parse_state(state).base
            fractions[state] = 1.0 if base == TRAINED or not full else min(1.0, params / full)
    return fractions


def recompute_tie(profile: ModelProfile) -> int:
    """1 + blocks for each tie-break the profile needs: +recompute states, +int8 states (else 1)."""
    states = {s for b in profile.blocks for s in b.states}
    kinds = any(is_recompute(s) for s in states) + any(is_quantized(s) for s in states)
    return 1 + profile.num_blocks * kinds


def _has_recompute(profile: ModelProfile) -> bool:
    return any(is_recompute(s) for b in profile.blocks for s in b.states)


def _with_plain_weights_bonus(profile: ModelProfile, weights: tuple[dict[str, int], ...]) -> tuple[dict[str, int], ...]:
    """Every state whose weights are not quantised earns 1 more, where the profile has +int8 states."""
    if not any(is_quantized(s) for b in profile.blocks for s in b.states):
        return weights
    return tuple({**w, **{s: w.get(s, 0) + 1 for s in b.states if not is_quantized(s)}}
                 for b, w in zip(profile.blocks, weights))


def _weights(profile: ModelProfile, per_block: tuple[float, ...], tie: int) -> tuple[dict[str, int], ...]:
    """Integer weights; a trainable state never rounds to 0, so it still beats frozen (a block of weight 0
    earns nothing, recomputing or not)."""
    def weight(w: float, fraction: float, state: str) -> int:
        if w <= 0:
            return 0
        return tie * max(1, round(w * fraction * WEIGHT_SCALE)) + int(recompute and not is_recompute(state))

    recompute = _has_recompute(profile)

    return tuple({state: weight(w, f, state) for state, f in state_fractions(block).items()}
                 for block, w in zip(profile.blocks, per_block))


def _no_recompute_bonus(profile: ModelProfile, tie: int) -> tuple[dict[str, int], ...]:
    recompute = _has_recompute(profile)
    return tuple({s: 1 for s in b.states if is_trainable(s) and not is_recompute(s)} if recompute else {}
                 for b in profile.blocks)


def make_objective(name: str, profile: ModelProfile, importance: tuple[float, ...] | None = None) -> Objective:
    """importance: per-block weights for `importance` (a weights file) or per-block coverage for `coverage`."""
    goal = _make_objective(name, profile, importance)
    return replace(goal, state_weights=_with_plain_weights_bonus(profile, goal.state_weights))


def _make_objective(name: str, profile: ModelProfile, importance: tuple[float, ...] | None) -> Objective:
    n = profile.num_blocks
    tie = recompute_tie(profile)
    if name == LAYERS:
        return Objective(LAYERS, _weights(profile, (1.0,) * n, tie), 0, WEIGHT_SCALE, tie)
    if name == COVERAGE:
        return _coverage_objective(profile, (1.0,) * n if importance is None else importance)
    if name == PARAMS:
        return Objective(PARAMS, _no_recompute_bonus(profile, tie), tie, 1, tie)
    if name != IMPORTANCE:
        raise ConfigError(f"unknown objective '{name}'; use one of: {', '.join(OBJECTIVES)}")
    if importance is None:
        measured = measured_weights(profile, tie)
        if measured is not None:
            return Objective(IMPORTANCE, measured, 0, MEASURED_SCALE, tie)
    weights = importance if importance is not None else profile_importance(profile)
    if len(weights) != n:
        raise ConfigError(f"importance has {len(weights)} weights but the model has {n} blocks; give one per block")
    if any(w < 0 for w in weights):
        raise ConfigError("importance weights must be >= 0; rescale the negative ones")
    if not any(w > 0 for w in weights):
        raise ConfigError("importance weights are all 0, so every configuration is worth the same; give the blocks "
                          "worth training a weight > 0")
    return Objective(IMPORTANCE, _weights(profile, tuple(weights), tie), 0, WEIGHT_SCALE, tie)


def coverage_objective(profile: ModelProfile, coverage: tuple[float, ...]) -> Objective:
    """`layers` with each block's weight scaled by its coverage (a share in [0, 1], one per block)."""
    goal = _coverage_objective(profile, coverage)
    return replace(goal, state_weights=_with_plain_weights_bonus(profile, goal.state_weights))


def _coverage_objective(profile: ModelProfile, coverage: tuple[float, ...]) -> Objective:
    if len(coverage) != profile.num_blocks or any(not 0.0 <= c <= 1.0 for c in coverage):
        raise ConfigError(f"coverage needs one share in [0, 1] per block ({profile.num_blocks}), got {coverage}; "
                          "solve the fleet with objective coverage")
    tie = recompute_tie(profile)
    return Objective(COVERAGE, _weights(profile, tuple(coverage), tie), 0, WEIGHT_SCALE, tie)


def measured_weights(profile: ModelProfile, tie: int = 1) -> tuple[dict[str, int], ...] | None:
    """Integer weights per (block, trainable state) from ModelProfile.importance, or None when it has none.
    A +recompute state missing from a block's values gets its base state's value (the same weights train);
    `tie` as in make_objective (recompute_tie)."""
    measured = getattr(profile, "importance", None)
    if measured is None:
        return None
    blocks = measured.get("blocks") if isinstance(measured, dict) else getattr(measured, "blocks", None)
    if blocks is None or len(blocks) != profile.num_blocks:
        raise ConfigError(f"the profile's importance has {len(blocks or ())} blocks but the model has "
                          f"{profile.num_blocks}; measure it again with 'budgetplan importance'")
    weights, recompute = [], _has_recompute(profile)
    for block, values in zip(profile.blocks, blocks):
        per_state = {}
        for state in block.states:
            if state not in values and (is_recompute(state) or is_quantized(state)):
                value = float(values.get(parse_state(state).base, 0.0))
            else:
                value = float(values.get(state, 0.0)) if is_trainable(state) else 0.0
            if not value >= 0 or value == float("inf"):
                raise ConfigError(f"importance of block {block.index} state {state} is {value}; values must be "
                                  "finite and >= 0; measure it again with 'budgetplan importance'")
            per_state[state] = (tie * max(1, round(value * MEASURED_SCALE)) + int(recompute and not is_recompute(state))
                                if value > 0 else 0)
        weights.append(per_state)
    if not any(any(w.values()) for w in weights):
        raise ConfigError("measured importance is 0 for every block and state: nothing beat training the head "
                          "alone; re-run 'budgetplan importance' with more --steps or a higher --lr")
    return tuple(weights)


def profile_importance(profile: ModelProfile) -> tuple[float, ...]:
    keys = [IMPORTANCE_KEY.format(index=i) for i in range(profile.num_blocks)]
    if not all(k in profile.measurement for k in keys):
        raise ConfigError("objective 'importance' needs weights: the profile has no 'importance.block.N' "
                          "measurements; pass --importance FILE (weights = [one per block])")
    return tuple(float(profile.measurement[k]) for k in keys)


def read_importance(path: str | Path) -> tuple[float, ...]:
    """Weights from a TOML or JSON file holding `weights = [w0, w1, ...]`, one finite number >= 0 per block."""
    path = Path(path)
    fix = "write weights = [one number >= 0 per block] to it"
    reader = read_json if path.suffix == ".json" else read_toml
    data = reader(path, "importance file", fix, ConfigError, kind="importance")
    refuse_other_kind(data, "importance", f"importance file {path}", "an importance weights file", fix, ConfigError)
    weights = data.get("weights") if isinstance(data, dict) else None
    if not isinstance(weights, list) or not weights:
        raise ConfigError(f"importance file {path} has no list 'weights'; {fix}")
    for index, weight in enumerate(weights):
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ConfigError(f"importance file {path}: weights/{index} = {weight!r} is not a number; {fix}")
        check_magnitudes(weight, f"importance file {path}", fix, ConfigError, path=("weights", index))
    return tuple(float(w) for w in weights)
