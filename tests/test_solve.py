"""The planner against brute-force enumeration of every state assignment (compose() is the reference), and
the incremental step of compose against its event list."""

from __future__ import annotations

import dataclasses
import itertools
import random
from functools import lru_cache

import pytest
from budgetplan.testing import make_profile, make_transformer_profile
from solve_helpers import FIELDS, BruteForce, all_configs, brute_best, device, fits, flops, random_caps, small_profile

from budgetplan.devices import DeviceClass, load_device
from budgetplan.errors import ConfigError, InfeasibleError
from budgetplan.profile.compose import compose, peak_events, place_parts, resolve_states
from budgetplan.profile.io import BUNDLED_PROFILE_PATH, read_profile
from budgetplan.profile.types import TRAINED, is_trainable
from budgetplan.solve import ProfilePlanner, solve_device
from budgetplan.solve.caps import MEMORY, budget_of, format_quantity
from budgetplan.solve.objective import make_objective
from budgetplan.solve.planner import BUDGET_FIELDS

OBJECTIVES = ("layers", "params", "importance")


@lru_cache(maxsize=None)
def random_case(num_blocks: int, seed: int, contiguous: bool = False):
    profile = make_profile(num_blocks=num_blocks, seed=seed, lora_ranks=(4, 8) if seed % 4 == 1 else (4,),
                           train_embeddings=seed % 3 == 0, held=seed % 5 != 4)
    return profile, all_configs(profile, contiguous)


def weights(profile, seed: int) -> tuple[float, ...]:
    return tuple(random.Random(seed).uniform(0, 2) for _ in range(profile.num_blocks))


def check_planner(profile, configs, objective: str, importance, rng: random.Random, draws: int,
                  contiguous: bool = False) -> int:
    """Answers of one planner for `draws` random caps equal brute force; returns how many caps fit something."""
    planner = ProfilePlanner(profile, objective, contiguous, importance)
    goal, found, brute = planner.goal, 0, BruteForce(configs, planner.goal)
    for _ in range(draws):
        caps = random_caps(rng, configs)
        best = brute.best(caps)
        answer = planner.answer(caps)
        if best is None:
            assert answer is None
            continue
        found += 1
        assert answer is not None and answer[0] == best[0], (caps, answer, best[0])
        assert answer[1] == goal.value(best[0], best[2].trainable_params)
    return found


# 1-4 blocks: 40 profiles each; 5 blocks: 10; 6 blocks: 4 (234 random profiles, held tensors, LoRA ranks,
# trained embeddings varied by seed), every objective, 12 caps each.
CASES = [(n, s) for n in range(1, 5) for s in range(40)] + [(5, s) for s in range(10)] + [(6, s) for s in range(4)]


@pytest.mark.parametrize("num_blocks,seed", CASES)
def test_planner_equals_brute_force_on_random_profiles(num_blocks, seed):
    profile, configs = random_case(num_blocks, seed)
    rng = random.Random(1000 * num_blocks + seed)
    found = sum(check_planner(profile, configs, o, weights(profile, seed), rng, 12) for o in OBJECTIVES)
    assert found > 0


@pytest.mark.parametrize("num_blocks,seed", [(n, s) for n in range(1, 7) for s in range(3)])
def test_contiguous_is_last_k_and_equals_brute_force(num_blocks, seed):
    profile, configs = random_case(num_blocks, seed, contiguous=True)
    _, every = random_case(num_blocks, seed)
    check_planner(profile, configs, "layers", None, random.Random(seed + 77), 10, contiguous=True)
    planner = ProfilePlanner(profile, contiguous=True)
    for row in range(len(planner.frontier)):
        states = planner.frontier.states(row)
        k = sum(map(is_trainable, states))
        assert all(s == TRAINED for s in states[num_blocks - k:]) and not any(map(is_trainable, states[:num_blocks - k]))


@pytest.mark.parametrize("num_blocks,seed", [(4, 0), (5, 3), (6, 1)])
def test_per_class_fallback_equals_the_frontier(num_blocks, seed):
    """A frontier over the row limit makes every class run its own pruned programme: same answers."""
    profile, configs = random_case(num_blocks, seed)
    whole = ProfilePlanner(profile, "params", row_limit=None)  # the whole frontier, however large
    alone = ProfilePlanner(profile, "params", row_limit=1)
    assert whole.frontier is not None and alone.frontier is None
    rng = random.Random(seed)
    for _ in range(15):
        caps = random_caps(rng, configs)
        assert alone.answer(caps) == whole.answer(caps)
        best = brute_best(configs, whole.goal, caps)
        assert (best[0] if best else None) == (whole.answer(caps) or (None,))[0]
    target = device(min(c.peak_bytes_predicted for *_, c in configs) - 1, 10**15, 10**9, profile.context.batch_size)
    assert alone.solve_class(target)[1] == whole.solve_class(target)[1]


def test_real_profiles_equal_brute_force(tiny_profiles):
    """Measured profiles of tiny BERT, ViT and GPT-2 (conftest), and the bundled MiniLM on sampled caps."""
    cases = [profile for _, profile, _ in tiny_profiles.values()]
    for index, profile in enumerate(cases):
        configs = all_configs(profile)
        for objective in OBJECTIVES:
            check_planner(profile, configs, objective, weights(profile, index), random.Random(index), 20)


MINILM_STATES = ("frozen_outside", "frozen_in_path", "trained", "lora-4", "trained+recompute", "lora-4+recompute")


def only_states(profile, keep: tuple[str, ...]):
    """The measured profile with the block states in `keep` only (the planner then chooses among them)."""
    blocks = tuple(dataclasses.replace(b, states={s: c for s, c in b.states.items() if s in keep},
                                       trainable_names={s: n for s, n in b.trainable_names.items() if s in keep})
                   for b in profile.blocks)
    configs = tuple(c for c in profile.configs if set(c.block_states) <= set(keep))
    return dataclasses.replace(profile, blocks=blocks, configs=configs)


@lru_cache(maxsize=None)
def minilm_configs():
    """5^6 = 15,625 valid configurations of the measured MiniLM profile with a full and a LoRA state, each
    also recomputing (its 10 states give 9^6 = 531,441, too many to enumerate in CI; random profiles with
    every recompute state are in tests/test_recompute.py)."""
    profile = only_states(read_profile(BUNDLED_PROFILE_PATH), MINILM_STATES)
    assert profile.block_state_names == MINILM_STATES
    return profile, all_configs(profile)


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_bundled_minilm_equals_brute_force(objective):
    """Every configuration of the measured MiniLM profile (issue 11: CP-SAT left --objective params unproved)."""
    profile, configs = minilm_configs()
    assert check_planner(profile, configs, objective, weights(profile, 5), random.Random(3), 25) > 0


def test_issue_4_block_case():
    """The budgets of issue 11's smallest wrong OPTIMAL (the profile is not recoverable; small_profile is
    one at that scale whose optimum is the configuration the issue names, 2.405 layers)."""
    profile = small_profile(25)
    nano = DeviceClass(name="issue-11", description="issue 11's 4-block case", memory_bytes=20_742,
                       total_memory_bytes=20_742, flops_per_s=716330163.64, uplink_bits_per_s=331.333,
                       round_deadline_s=600.0, upload_time_budget_s=60.0, samples_per_round=67,
                       sources=tuple(f"{f}: assumption: issue 11" for f in FIELDS))
    caps = ProfilePlanner(profile).caps(budget_of(nano))
    best = brute_best(all_configs(profile), make_objective("layers", profile), caps)
    solution = solve_device(profile, nano)
    assert solution.block_states == best[0] == ("frozen_outside", "lora-4", "trained", "trained")
    assert solution.objective_value == 2.405 and solution.status == "OPTIMAL"
    assert solution.peak_bytes == best[2].peak_bytes_predicted <= 20_742


@pytest.mark.parametrize("num_blocks,seed", [(2, 0), (4, 1), (6, 2)])
def test_infeasible_memory_names_device_budget_and_least_value(num_blocks, seed):
    profile, configs = random_case(num_blocks, seed)
    least = min(c.peak_bytes_predicted for _, _, c in configs)
    target = device(least - 1, max(flops(c) for *_, c in configs), max(c.upload_bytes for *_, c in configs),
                    profile.context.batch_size, name="tiny-box")
    with pytest.raises(InfeasibleError) as info:
        solve_device(profile, target)
    message = str(info.value)
    assert "\n" not in message and message.startswith("tiny-box: ")
    assert BUDGET_FIELDS[MEMORY] in message and f"needs {format_quantity(MEMORY, least)}" in message


def test_infeasible_message_agrees_with_itself():
    """Issue 11: 'needs 5285 bytes; the budget is 5907 bytes'. Each least value named is above its budget."""
    for seed in range(6):
        profile, configs = random_case(4, seed)
        rng = random.Random(seed)
        for _ in range(20):
            caps = random_caps(rng, configs)
            if brute_best(configs, make_objective("layers", profile), caps) is not None:
                continue
            memory_least = [c.peak_bytes_predicted for *_, c in configs if flops(c) <= caps[1] and c.upload_bytes <= caps[2]]
            with pytest.raises(InfeasibleError) as info:
                solve_device(profile, device(*caps, profile.context.batch_size))
            if memory_least:
                assert f"needs {format_quantity(MEMORY, min(memory_least))}; the budget is " \
                       f"{format_quantity(MEMORY, caps[0])}" in str(info.value)
                assert min(memory_least) > caps[0]


def test_every_answer_is_recomposed(monkeypatch):
    """A planner row whose costs compose() does not confirm never becomes a plan."""
    import budgetplan.solve.planner as planner_module
    from budgetplan.errors import PlanError

    profile = make_profile(num_blocks=3, seed=2)
    target = device(10**9, 10**15, 10**9, profile.context.batch_size)
    real = planner_module.compose
    monkeypatch.setattr(planner_module, "compose", lambda p, s: dataclasses.replace(
        real(p, s), peak_bytes_predicted=10**10))
    with pytest.raises(PlanError, match="internal check failed"):
        solve_device(profile, target)


def test_measured_importance_per_state_is_the_objective():
    """ModelProfile.importance (the shared format: one dict per block, state -> value) ranks plans."""
    profile = make_profile(num_blocks=3, seed=1, lora_ranks=(4,))
    measured = {"method": "test", "data": "none", "steps": 1, "seconds": 0.0, "source": "measured",
                "blocks": [{"trained": 0.1, "lora-4": 0.09}, {"trained": 0.2}, {"trained": 5.0, "lora-4": 4.0}]}
    profile = _with_importance(profile, measured)
    planner = ProfilePlanner(profile, "importance")
    configs = all_configs(profile)
    rng = random.Random(0)
    for _ in range(30):
        caps = random_caps(rng, configs)
        best = brute_best(configs, planner.goal, caps)
        assert (planner.answer(caps) or (None,))[0] == (best[0] if best else None)
    top = planner.answer((10**12, 10**15, 10**12))[0]
    assert top == ("trained", "trained", "trained")
    lora_only = {**measured, "blocks": [{"lora-4": 1.0}, {}, {}]}
    top = ProfilePlanner(_with_importance(profile, lora_only), "importance").answer((10**12, 10**15, 10**12))
    assert top[0][0] == "lora-4" and top[1] == 10**6


def _with_importance(profile, measured):
    """A profile carrying measured importance (before and after ModelProfile gains the field)."""
    if "importance" in {f.name for f in dataclasses.fields(profile)}:
        return dataclasses.replace(profile, importance=measured)
    holder = type("ProfileWithImportance", (), {"__getattr__": lambda self, name: getattr(profile, name),
                                                 "importance": measured})
    return holder()


@pytest.mark.parametrize("num_blocks,seed", [(n, s) for n in (1, 3, 5) for s in range(4)])
def test_compose_step_equals_its_event_list(num_blocks, seed):
    """compose() folds compose.advance over the parts; its peak is the largest of compose.peak_events."""
    profile = make_profile(num_blocks=num_blocks, seed=seed, train_embeddings=seed % 2 == 1, lora_ranks=(4, 8))
    for combo in itertools.islice(itertools.product(profile.block_state_names, repeat=num_blocks), 0, None, 3):
        try:
            states = resolve_states(combo, profile.context.train_embeddings)
        except ConfigError:
            continue
        parts = place_parts(profile, states)
        cost = compose(profile, states)
        assert cost.peak_bytes_predicted == max(peak_events(profile, parts).values())
        assert cost.upload_bytes == sum(p.cost.trainable_bytes for p in parts)


def test_bundled_minilm_on_jetson_nano_fits():
    profile = read_profile(BUNDLED_PROFILE_PATH)
    nano = load_device("jetson-nano")
    solution = solve_device(profile, nano)
    assert solution.status == "OPTIMAL"
    assert compose(profile, solution.block_states).peak_bytes_predicted == solution.peak_bytes <= nano.memory_bytes


def test_frontier_of_identical_blocks_stays_small():
    """12 identical BERT-style blocks x 5 states (244 M configurations): a few hundred rows."""
    profile = make_transformer_profile(num_blocks=12, lora_ranks=(4, 8))
    planner = ProfilePlanner(profile)
    assert planner.frontier is not None and len(planner.frontier) < 1_000
    assert fits(compose(profile, planner.frontier.states(0)), (10**13, 10**16, 10**12))
