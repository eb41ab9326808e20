"""The solver against brute-force enumeration of every configuration (compose() is the reference)."""

from __future__ import annotations

import itertools
import random
from functools import lru_cache

import pytest
from budgetplan.testing import make_profile

from budgetplan.devices import DeviceClass, load_device
from budgetplan.errors import ConfigError, InfeasibleError
from budgetplan.profile.compose import FROZEN, compose, resolve_states
from budgetplan.profile.io import read_profile
from budgetplan.profile.types import TRAINED, is_trainable
from budgetplan.solve import solve_device
from budgetplan.solve.budget import MEMORY, format_quantity
from budgetplan.solve.classes import BUDGET_FIELDS
from budgetplan.profile.io import BUNDLED_PROFILE_PATH as BUNDLED_MINILM_PATH
from budgetplan.solve.objective import make_objective

FIELDS = ("memory_bytes", "total_memory_bytes", "flops_per_s", "uplink_bits_per_s", "round_deadline_s",
          "upload_time_budget_s", "samples_per_round")
TIME_LIMIT_S = 20.0


def device(memory: int, flops: int, upload: int, batch: int, name: str = "test-class") -> DeviceClass:
    """A class whose budgets equal the given integers in the solver's units: a 1 s round and upload window,
    samples per round = the profiled batch (so FLOPs per round = FLOPs of one batch), uplink 8 bits per byte."""
    return DeviceClass(name=name, description="test", memory_bytes=memory, total_memory_bytes=memory,
                       flops_per_s=float(flops), uplink_bits_per_s=float(8 * upload), round_deadline_s=1.0,
                       upload_time_budget_s=1.0, samples_per_round=batch,
                       sources=tuple(f"{f}: assumption: test" for f in FIELDS))


def primary(goal, states: tuple[str, ...], trainable_params: int) -> int:
    weights = getattr(goal, "state_weights", None)
    if weights is None:  # the per-block form: a trainable block earns its weight
        return sum(w for w, s in zip(goal.block_weights, states) if is_trainable(s)) + goal.params_weight * trainable_params
    return sum(w.get(s, 0) for w, s in zip(weights, states)) + goal.params_weight * trainable_params


@lru_cache(maxsize=None)
def enumerate_configs(num_blocks: int, seed: int, contiguous: bool = False):
    """(resolved states, state-index key, ConfigCost) of every valid configuration of the seeded profile."""
    profile = make_profile(num_blocks=num_blocks, seed=seed, lora_ranks=(4,), train_embeddings=seed % 3 == 0)
    order = profile.block_state_names
    if contiguous:
        combos = [(FROZEN,) * (num_blocks - k) + (TRAINED,) * k for k in range(num_blocks + 1)]
    else:
        combos = itertools.product(order, repeat=num_blocks)
    configs = []
    for combo in combos:
        try:
            states = resolve_states(combo, profile.context.train_embeddings)
        except ConfigError:
            continue
        configs.append((states, tuple(order.index(s) for s in states), compose(profile, states)))
    return profile, configs


def brute_best(profile, configs, goal, caps):
    """The first fitting configuration in the solver's order: best objective, least peak, state indices."""
    fitting = [(states, key, c) for states, key, c in configs if fits(c, caps)]
    if not fitting:
        return None, fitting
    return min(fitting, key=lambda x: (-primary(goal, x[0], x[2].trainable_params), x[2].peak_bytes_predicted,
                                       x[1])), fitting


def fits(cost, caps) -> bool:
    return (cost.peak_bytes_predicted <= caps[0] and cost.flops_forward + cost.flops_backward <= caps[1]
            and cost.upload_bytes <= caps[2])


def random_caps(rng: random.Random, configs) -> tuple[int, int, int]:
    def pick(values):
        low, high = min(values), max(values)
        return rng.randint(low, high + (high - low) // 10)
    return (pick([c.peak_bytes_predicted for _, _, c in configs]),
            pick([c.flops_forward + c.flops_backward for _, _, c in configs]),
            pick([c.upload_bytes for _, _, c in configs]))


CASES = [(n, seed, objective) for n in range(1, 7) for seed in range(3) for objective in ("layers", "params", "importance")]


@pytest.mark.parametrize("num_blocks,seed,objective", CASES)
def test_solver_matches_brute_force(num_blocks, seed, objective):
    profile, configs = enumerate_configs(num_blocks, seed)
    importance = tuple(random.Random(seed).uniform(0, 2) for _ in range(num_blocks))
    goal = make_objective(objective, profile, importance)
    rng = random.Random(1000 * num_blocks + seed)
    for _ in range(6):
        caps = random_caps(rng, configs)
        best, fitting = brute_best(profile, configs, goal, caps)
        target = device(*caps, profile.context.batch_size)
        if best is None:
            with pytest.raises(InfeasibleError):
                solve_device(profile, target, objective, time_limit_s=TIME_LIMIT_S, importance=importance)
            continue
        solution = solve_device(profile, target, objective, time_limit_s=TIME_LIMIT_S, importance=importance)
        cost = compose(profile, solution.block_states)
        assert solution.status == "OPTIMAL"
        assert primary(goal, solution.block_states, cost.trainable_params) == primary(goal, best[0], best[2].trainable_params)
        assert solution.block_states == best[0]  # unique answer: objective, then peak, then state order
        assert (solution.peak_bytes, solution.flops_per_round, solution.upload_bytes_per_round) == (
            cost.peak_bytes_predicted, cost.flops_forward + cost.flops_backward, cost.upload_bytes)
        assert fits(cost, caps)
        ties = [c.peak_bytes_predicted for s, _, c in fitting
                if primary(goal, s, c.trainable_params) == primary(goal, best[0], best[2].trainable_params)]
        assert solution.peak_bytes == min(ties)


@pytest.mark.parametrize("num_blocks,seed", [(n, s) for n in range(1, 7) for s in range(2)])
def test_contiguous_returns_last_k_and_matches_brute_force(num_blocks, seed):
    profile, configs = enumerate_configs(num_blocks, seed, contiguous=True)
    _, all_configs = enumerate_configs(num_blocks, seed)
    goal = make_objective("layers", profile)
    rng = random.Random(seed + 77)
    for _ in range(5):
        caps = random_caps(rng, all_configs)
        best, _ = brute_best(profile, configs, goal, caps)
        target = device(*caps, profile.context.batch_size)
        if best is None:
            with pytest.raises(InfeasibleError):
                solve_device(profile, target, contiguous=True, time_limit_s=TIME_LIMIT_S)
            continue
        solution = solve_device(profile, target, contiguous=True, time_limit_s=TIME_LIMIT_S)
        k = solution.trained_blocks
        assert all(not is_trainable(s) for s in solution.block_states[: num_blocks - k])
        assert all(s == TRAINED for s in solution.block_states[num_blocks - k:])
        assert solution.block_states == best[0]


@pytest.mark.parametrize("num_blocks,seed", [(2, 0), (4, 1), (6, 2)])
def test_infeasible_memory_names_device_budget_and_least_value(num_blocks, seed):
    profile, configs = enumerate_configs(num_blocks, seed)
    flops = max(c.flops_forward + c.flops_backward for _, _, c in configs)
    upload = max(c.upload_bytes for _, _, c in configs)
    least = min(c.peak_bytes_predicted for _, _, c in configs)
    target = device(least - 1, flops, upload, profile.context.batch_size, name="tiny-box")
    with pytest.raises(InfeasibleError) as info:
        solve_device(profile, target, time_limit_s=TIME_LIMIT_S)
    message = str(info.value)
    assert "\n" not in message and message.startswith("tiny-box: ")
    assert BUDGET_FIELDS[MEMORY] in message
    assert f"needs {format_quantity(MEMORY, least)}" in message


def test_bundled_minilm_on_jetson_nano_fits():
    profile = read_profile(BUNDLED_MINILM_PATH)
    nano = load_device("jetson-nano")
    solution = solve_device(profile, nano, time_limit_s=TIME_LIMIT_S)
    cost = compose(profile, solution.block_states)
    assert solution.status == "OPTIMAL"
    assert cost.peak_bytes_predicted == solution.peak_bytes <= nano.memory_bytes
