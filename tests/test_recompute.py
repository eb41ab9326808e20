"""Activation recomputation (+recompute states): the state names, the planner against brute force, the plan.

The profiler side (composed FLOPs, saved bytes and peak against direct runs of BERT, GPT-2 and Llama) is in
tests/test_profile_recompute.py.
"""

from __future__ import annotations

import itertools
import random
from functools import lru_cache

import pytest
from budgetplan.testing import make_profile

from budgetplan.devices import DeviceClass
from budgetplan.errors import ConfigError, InfeasibleError
from budgetplan.plan import PLAN_SCHEMA_VERSION, Plan, SolverSettings, build_plan, class_from_solution, validate_plan
from budgetplan.profile.compose import FROZEN, compose, resolve_states
from budgetplan.profile.types import (
    TRAINED, base_state, is_recompute, is_trainable, lora_rank, parse_state, recompute_state, without_recompute,
)
from budgetplan.solve import solve_device
from budgetplan.solve.objective import make_objective

FIELDS = ("memory_bytes", "total_memory_bytes", "flops_per_s", "uplink_bits_per_s", "round_deadline_s",
          "upload_time_budget_s", "samples_per_round")


def test_state_names_parse_into_base_and_recompute():
    assert parse_state("trained+recompute").base == TRAINED and is_recompute("trained+recompute")
    assert lora_rank("lora-8+recompute") == 8 and base_state("lora-8+recompute") == "lora-8"
    assert recompute_state("lora-16") == "lora-16+recompute" and recompute_state("trained") == "trained+recompute"
    assert is_trainable("lora-4+recompute") and not is_recompute("lora-4") and not is_trainable("frozen_in_path")
    for bad in ("frozen_outside+recompute", "frozen+recompute", "trained+recompute+recompute", "lora-0",
                "lora-x+recompute", "Trained", "recompute", "lora-08"):
        with pytest.raises(ValueError):
            parse_state(bad)


def test_bad_state_in_a_configuration_is_one_config_error():
    profile = make_profile(num_blocks=2, recompute=True)
    for bad in ("frozen_in_path+recompute", "trained+recompute+recompute", "lora-x"):
        with pytest.raises(ConfigError, match="block 1: .*only trainable|block 1: .*unknown|block 1: .*lora-R"):
            compose(profile, ("trained", bad))


def device(memory: int, flops: int, upload: int, batch: int) -> DeviceClass:
    """Budgets equal to the given integers in the solver's units (1 s round, samples = the profiled batch)."""
    return DeviceClass(name="test-class", description="test", memory_bytes=memory, total_memory_bytes=memory,
                       flops_per_s=float(flops), uplink_bits_per_s=float(8 * upload), round_deadline_s=1.0,
                       upload_time_budget_s=1.0, samples_per_round=batch,
                       sources=tuple(f"{f}: assumption: test" for f in FIELDS))


@lru_cache(maxsize=None)
def all_configs(num_blocks: int, seed: int):
    """Every valid configuration of the seeded profile with recompute states: (states, state-index key, cost)."""
    profile = make_profile(num_blocks=num_blocks, seed=seed, lora_ranks=(4,), train_embeddings=seed % 3 == 0,
                           recompute=True)
    order = profile.block_state_names
    configs = []
    for combo in itertools.product(order, repeat=num_blocks):
        try:
            states = resolve_states(combo, profile.context.train_embeddings)
        except ConfigError:
            continue
        configs.append((states, tuple(order.index(s) for s in states), compose(profile, states)))
    return profile, configs


def primary(goal, states, trainable_params: int) -> int:
    return sum(w.get(s, 0) for w, s in zip(goal.state_weights, states)) + goal.params_weight * trainable_params


def fits(cost, caps) -> bool:
    return (cost.peak_bytes_predicted <= caps[0] and cost.flops_forward + cost.flops_backward <= caps[1]
            and cost.upload_bytes <= caps[2])


def brute_best(configs, goal, caps):
    """The first fitting configuration in the solver's order: best objective, least peak, FLOPs, upload and kept
    bytes, then state indices."""
    fitting = [c for c in configs if fits(c[2], caps)]
    return min(fitting, key=lambda x: (-primary(goal, x[0], x[2].trainable_params), x[2].peak_bytes_predicted,
                                       x[2].flops_forward + x[2].flops_backward, x[2].upload_bytes,
                                       x[2].activation_bytes, x[1]), default=None)


def random_caps(rng: random.Random, configs, goal, memory_bound: bool):
    """Random budgets over the configurations' range; memory_bound: only memory limits, below the peak of the
    unbudgeted answer (where recomputation decides how many blocks fit)."""
    def pick(values):
        low, high = min(values), max(values)
        return rng.randint(low, high + (high - low) // 10)
    peaks = [c.peak_bytes_predicted for _, _, c in configs]
    flops = [c.flops_forward + c.flops_backward for _, _, c in configs]
    uploads = [c.upload_bytes for _, _, c in configs]
    if memory_bound:
        free = brute_best(configs, goal, (max(peaks), max(flops), max(uploads)))
        return rng.randint(min(peaks), free[2].peak_bytes_predicted), max(flops), max(uploads)
    return pick(peaks), pick(flops), pick(uploads)


CASES = [(n, seed, objective) for n in range(1, 5) for seed in range(2) for objective in ("layers", "params", "importance")]
CASES += [(5, 1, "layers")]


@pytest.mark.parametrize("num_blocks,seed,objective", CASES)
def test_solver_with_recompute_states_matches_brute_force(num_blocks, seed, objective):
    profile, configs = all_configs(num_blocks, seed)
    importance = tuple(random.Random(seed).uniform(0, 2) for _ in range(num_blocks))
    goal = make_objective(objective, profile, importance)
    rng = random.Random(1000 * num_blocks + seed)
    chosen = set()
    for case in range(6):
        caps = random_caps(rng, configs, goal, memory_bound=case % 2 == 1)
        best = brute_best(configs, goal, caps)
        target = device(*caps, profile.context.batch_size)
        if best is None:
            with pytest.raises(InfeasibleError):
                solve_device(profile, target, objective, importance=importance)
            continue
        solution = solve_device(profile, target, objective, importance=importance)
        assert solution.status == "OPTIMAL"
        assert solution.block_states == best[0]
        cost = compose(profile, solution.block_states)
        assert (solution.peak_bytes, solution.flops_per_round) == (
            cost.peak_bytes_predicted, cost.flops_forward + cost.flops_backward)
        chosen.update(s for s in solution.block_states if is_recompute(s))
    if num_blocks >= 3 and objective == "layers":
        assert chosen, "random budgets never made the solver recompute: the test exercises nothing new"


def test_reported_objective_is_the_base_objective_and_recompute_only_when_memory_needs_it():
    profile, configs = all_configs(4, 1)
    roomy = device(10**12, 10**15, 10**9, profile.context.batch_size)
    solution = solve_device(profile, roomy, "layers")
    assert solution.block_states == (TRAINED,) * 4 and solution.objective_value == 4.0
    # The least memory at which 4 trained blocks fit (recomputing any of them): below the plain peak.
    plain = compose(profile, (TRAINED,) * 4).peak_bytes_predicted
    four = [c.peak_bytes_predicted for s, _, c in configs if all(base_state(x) == TRAINED for x in s)]
    tight = device(min(four), 10**15, 10**9, profile.context.batch_size)
    assert min(four) < plain
    squeezed = solve_device(profile, tight, "layers")
    assert squeezed.objective_value == 4.0 and any(is_recompute(s) for s in squeezed.block_states)
    try:  # without recomputation 4 layers do not fit there
        fewer = solve_device(without_recompute(profile), tight, "layers")
        assert fewer.objective_value < 4.0
    except InfeasibleError:
        pass


def test_without_recompute_offers_the_plain_states_only():
    profile = make_profile(num_blocks=3, recompute=True)
    plain = without_recompute(profile)
    assert plain.block_state_names == make_profile(num_blocks=3).block_state_names
    assert all(not is_recompute(s) for b in plain.blocks for s in b.trainable_names)


def test_plan_carries_recompute_states_and_validates():
    profile = make_profile(num_blocks=3, recompute=True)
    target = device(10**12, 10**15, 10**9, profile.context.batch_size)
    solution = solve_device(profile, target)
    forced = type(solution)(**{**solution.__dict__, "block_states": ("frozen_outside", "trained+recompute",
                                                                      "lora-4+recompute")})
    plan = build_plan(profile, [class_from_solution(profile, forced, target, 1.0)],
                      SolverSettings("layers", False, 10.0, 0, 1)).to_dict()
    entry = plan["classes"]["test-class"]
    minor = int(plan["schema_version"].split(".")[1])  # 2.1 added recompute; later minors keep it
    assert plan["schema_version"].startswith("2.") and minor >= 1 and plan["solver"]["recompute"] is True
    assert entry["block_states"][1:] == ["trained+recompute", "lora-4+recompute"]
    assert entry["recompute"] == {"blocks": [1, 2], "method": "torch.utils.checkpoint", "use_reentrant": False}
    assert entry["lora"]["ranks"] == {"2": 4}
    assert Plan.from_dict(validate_plan(plan)).classes[0].block_states == tuple(entry["block_states"])
    old = {**plan, "schema_version": "2.0", "classes": {"test-class": {k: v for k, v in entry.items()
                                                                       if k != "recompute"}}}
    old["classes"]["test-class"]["block_states"] = ["frozen_outside", "trained", "lora-4"]
    validate_plan(old)  # a 2.0 plan (no recompute field, plain states) still reads
    bad = {**plan, "classes": {"test-class": {**entry, "block_states": ["frozen_outside+recompute"] * 3}}}
    with pytest.raises(Exception, match="block_states"):
        validate_plan(bad)


def test_measured_importance_of_a_recompute_state_falls_back_to_its_base_state():
    import dataclasses

    from budgetplan.profile.types import Importance

    profile = make_profile(num_blocks=3, lora_ranks=(4,), recompute=True)
    values = ({TRAINED: 0.5, "lora-4": 0.2}, {TRAINED: 0.3, "trained+recompute": 0.1}, {})
    profile = dataclasses.replace(profile, importance=Importance("test", "test", 1, 0.1, values))
    goal = make_objective("importance", profile)
    w = goal.state_weights
    # the base state's value, less the one tie point a non-recomputing block earns
    assert w[0]["trained+recompute"] == w[0][TRAINED] - 1 and w[0]["lora-4+recompute"] == w[0]["lora-4"] - 1
    assert w[1]["trained+recompute"] < w[1][TRAINED] - 1  # its own measured value wins over the base's
    assert w[2].get("trained+recompute", 0) == 0 and w[2].get(TRAINED, 0) == 0
    assert goal.report(goal.value(("trained+recompute", "frozen_in_path", "frozen_in_path"), 0)) == \
        goal.report(goal.value((TRAINED, "frozen_in_path", "frozen_in_path"), 0))


def test_state_problem_reads_states_with_parse_state():
    from budgetplan.profile.types import state_problem

    for good in ("trained+recompute", "lora-8+recompute", "lora-16", "trained", "frozen_in_path", "frozen_outside"):
        assert state_problem(good) is None, good
    for bad in ("frozen_in_path+recompute", "lora-0+recompute", "lora-08", "trained+recompute+recompute",
                "frozen", "Trained", 3):
        assert state_problem(bad), bad
