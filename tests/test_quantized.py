"""+int8 states in the planner and the plan: brute force against the planner, the tie-break, --no-quantized.

The profiler side (composed FLOPs, saved bytes and peak against direct runs of BERT, GPT-2 and Llama) is in
tests/test_profile_quantized.py.
"""

from __future__ import annotations

import random

import pytest

from budgetplan.api import offered_states
from budgetplan.errors import InfeasibleError
from budgetplan.plan import PLAN_SCHEMA_VERSION, Plan, SolverSettings, build_plan, class_from_solution, validate_plan
from budgetplan.profile.compose import compose
from budgetplan.profile.types import TRAINED, is_quantized, is_recompute, offered, without_quantized
from budgetplan.solve import solve_device
from budgetplan.solve.objective import make_objective
from budgetplan.testing import make_profile
from solve_helpers import BruteForce, all_configs, device

CASES = [(n, seed, objective) for n in (2, 3, 4) for seed in range(2) for objective in ("layers", "params", "importance")]


def memory_caps(rng: random.Random, configs, case: int) -> tuple[int, int, int]:
    """Only memory binds: at the least peak of all (case 1), else at the peak of a random configuration that
    holds some block in int8."""
    quantised = [c for states, _, c in configs if any(is_quantized(s) for s in states)]
    most = (max(c.flops_forward + c.flops_backward for *_, c in configs), max(c.upload_bytes for *_, c in configs))
    if case == 1:
        return min(c.peak_bytes_predicted for *_, c in configs), *most
    return rng.choice(quantised).peak_bytes_predicted, *most


def random_caps(rng: random.Random, configs) -> tuple[int, int, int]:
    columns = [(c.peak_bytes_predicted, c.flops_forward + c.flops_backward, c.upload_bytes) for *_, c in configs]
    return tuple(rng.randint(min(v), max(v) + (max(v) - min(v)) // 10) for v in zip(*columns))


@pytest.mark.parametrize("num_blocks,seed,objective", CASES)
def test_solver_with_int8_states_matches_brute_force(num_blocks, seed, objective):
    profile = make_profile(num_blocks=num_blocks, seed=seed, recompute=True, quantized=True)
    importance = tuple(random.Random(seed).uniform(0, 2) for _ in range(num_blocks))
    goal = make_objective(objective, profile, importance)
    configs = all_configs(profile)
    brute = BruteForce(configs, goal)
    rng = random.Random(2500 + 10 * num_blocks + seed)
    chosen = set()
    for case in range(8):
        caps = memory_caps(rng, configs, case) if case % 2 else random_caps(rng, configs)
        best = brute.best(caps)
        target = device(*caps, profile.context.batch_size)
        if best is None:
            with pytest.raises(InfeasibleError):
                solve_device(profile, target, objective, importance=importance)
            continue
        solution = solve_device(profile, target, objective, importance=importance)
        assert solution.block_states == best[0], caps
        cost = compose(profile, solution.block_states)
        assert solution.peak_bytes == cost.peak_bytes_predicted
        chosen.update(s for s in solution.block_states if is_quantized(s))
    if num_blocks >= 3:
        assert chosen, "random budgets never made the solver quantise: the test exercises nothing new"


def test_unbudgeted_plans_quantise_nothing_and_tight_memory_needs_int8():
    profile = make_profile(num_blocks=4, seed=1, recompute=True, quantized=True)
    roomy = device(10**12, 10**15, 10**9, profile.context.batch_size)
    assert not any(is_quantized(s) for s in solve_device(profile, roomy, "layers").block_states)
    # head only: the least memory without int8, and with frozen int8 weights below it
    n = profile.num_blocks
    plain = compose(profile, ("frozen",) * n).peak_bytes_predicted
    least = min(compose(profile, s).peak_bytes_predicted for s in [("frozen+int8",) * n, ("frozen",) * n])
    assert least < plain
    tight = device(least, 10**15, 10**9, profile.context.batch_size)
    assert all(is_quantized(s) for s in solve_device(profile, tight, "layers").block_states)
    with pytest.raises(InfeasibleError):
        solve_device(without_quantized(profile), tight, "layers")


def test_no_quantized_offers_the_plain_states_only_and_keeps_recompute():
    profile = make_profile(num_blocks=3, recompute=True, quantized=True)
    plain = offered_states(profile, SolverSettings("layers", False, 10.0, 0, 1, True, False))
    assert plain.block_state_names == make_profile(num_blocks=3, recompute=True).block_state_names
    neither = offered(profile, recompute=False, quantized=False)
    assert neither.block_state_names == make_profile(num_blocks=3).block_state_names
    assert any(is_recompute(s) for s in plain.block_state_names)
    with pytest.raises(ValueError, match="unknown kind of state"):
        offered(profile, int4=False)


def test_plan_carries_int8_states_and_older_plans_still_load():
    profile = make_profile(num_blocks=3, recompute=True, quantized=True)
    target = device(10**12, 10**15, 10**9, profile.context.batch_size)
    solution = solve_device(profile, target)
    forced = type(solution)(**{**solution.__dict__, "block_states": ("frozen_outside+int8", "lora-4+int8+recompute",
                                                                      TRAINED)})
    plan = build_plan(profile, [class_from_solution(profile, forced, target, 1.0)],
                      SolverSettings("layers", False, 10.0, 0, 1, quantized=False)).to_dict()
    entry = plan["classes"]["test-class"]
    assert plan["schema_version"] == PLAN_SCHEMA_VERSION == "2.2" and plan["solver"]["quantized"] is False
    assert entry["quantized"]["blocks"] == [0, 1] and entry["recompute"]["blocks"] == [1]
    assert entry["predicted"]["peak_bytes"] == compose(profile, forced.block_states).peak_bytes_predicted
    read = Plan.from_dict(validate_plan(plan))
    assert read.classes[0].block_states == forced.block_states and read.solver.quantized is False
    older = {**plan, "schema_version": "2.1", "solver": {k: v for k, v in plan["solver"].items() if k != "quantized"},
             "classes": {"test-class": {k: v for k, v in entry.items() if k != "quantized"}}}
    older["classes"]["test-class"]["block_states"] = ["frozen_outside", "lora-4+recompute", TRAINED]
    assert Plan.from_dict(older).solver.quantized is True  # a 2.1 plan was solved before +int8 existed
    bad = {**plan, "classes": {"test-class": {**entry, "block_states": ["frozen_outside", "trained+int8", TRAINED]}}}
    with pytest.raises(Exception, match="trained"):
        Plan.from_dict(bad)


def test_frozen_embeddings_go_int8_per_class_only_where_that_trains_more():
    from budgetplan.api import plan_for_devices
    from budgetplan.profile.types import with_int8_embeddings

    profile = make_profile(num_blocks=3, seed=2, quantized=True)
    int8 = with_int8_embeddings(profile)
    n = profile.num_blocks
    # the least memory for head only with int8 embeddings: below what head only needs without them
    least = min(compose(int8, s).peak_bytes_predicted for s in [("frozen+int8",) * n, ("frozen",) * n])
    assert least < min(compose(profile, s).peak_bytes_predicted for s in [("frozen+int8",) * n, ("frozen",) * n])
    tight, roomy = device(least, 10**15, 10**9, 8, "tight"), device(10**12, 10**15, 10**9, 8, "roomy")
    settings = SolverSettings("layers", False, 10.0, 0, 1)
    plan = plan_for_devices(profile, [tight, roomy], settings)
    assert plan.by_name("tight").int8_embeddings and not plan.by_name("roomy").int8_embeddings
    assert plan.by_name("tight").predicted.peak_bytes == compose(int8, plan.by_name("tight").block_states).peak_bytes_predicted
    entry = plan.to_dict()["classes"]["tight"]
    assert entry["int8_embeddings"] is True and Plan.from_dict(plan.to_dict()).by_name("tight").int8_embeddings
    with pytest.raises(InfeasibleError):  # without +int8 nothing fits the tight class (and roomy alone is fine)
        plan_for_devices(profile, [tight], SolverSettings("layers", False, 10.0, 0, 1, True, False))
