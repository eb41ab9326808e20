"""The answer order (solve/frontier.py) and what the planner builds on it.

Among configurations within a class's caps the answer is the first by: the highest objective, then the least
peak, FLOPs, upload and kept bytes, then the first in state order. Reading the sums (FLOPs, upload, kept bytes)
before the state order lets the programme drop a prefix that another, no worse in every cost, beats in a sum,
whatever their state order; brute force over every configuration stays the reference.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from budgetplan.testing import make_profile, make_transformer_profile, with_recompute
from solve_helpers import BruteForce, all_configs, answer_key, flops, random_caps

from budgetplan.profile.compose import compose
from budgetplan.solve import ProfilePlanner
from budgetplan.solve import frontier as frontier_module
from budgetplan.solve.bounds import SuffixBound
from budgetplan.solve.caps import COMPUTE, MEMORY, UPLOAD
from budgetplan.solve.frontier import Bound, build_frontier


def case(num_blocks: int, seed: int):
    profile = make_profile(num_blocks=num_blocks, seed=seed, lora_ranks=(4,), recompute=True, held=seed % 2 == 0)
    return profile, all_configs(profile)


def drawn(rng: random.Random, configs, brute: BruteForce, draws: int):
    """(caps, brute force's answer) for each of `draws` random caps that some configuration fits."""
    for _ in range(draws):
        caps = random_caps(rng, configs)
        best = brute.best(caps)
        if best is not None:
            yield caps, best


def state_order_first(goal, configs, caps):
    """The answer had ties in objective and peak gone to state order alone (the order before this one)."""
    fitting = [c for c in configs if c[2].peak_bytes_predicted <= caps[0] and flops(c[2]) <= caps[1]
               and c[2].upload_bytes <= caps[2]]
    return min(fitting, key=lambda c: (-goal.value(c[0], c[2].trainable_params), c[2].peak_bytes_predicted, c[1]),
               default=None)


def test_ties_in_objective_and_peak_go_to_fewer_flops_then_upload_then_kept_bytes():
    """Identical blocks with recompute states (permutations tie in objective and often in peak): wherever the sums
    decide a tie differently from state order, the whole frontier and the per-class programme both answer by the
    sums (such caps exist among the drawn ones: asserted)."""
    profile = with_recompute(make_transformer_profile(num_blocks=4, lora_ranks=(4,)))
    configs = all_configs(profile)
    whole, per_class = ProfilePlanner(profile, row_limit=None), ProfilePlanner(profile, row_limit=0)
    brute, rng = BruteForce(configs, whole.goal), random.Random(0)
    decided_by_sums = 0
    for caps, best in drawn(rng, configs, brute, 300):
        decided_by_sums += best[0] != state_order_first(whole.goal, configs, caps)[0]
        assert whole.answer(caps)[0] == per_class.answer(caps)[0] == best[0]
    assert decided_by_sums > 0


def _amounts(group) -> np.ndarray:
    p = group.prefix
    shared = [-p.shared[n] for n in sorted(p.shared)]
    return np.column_stack([p.kept_bytes, p.resident_extra_bytes, p.grad_bytes, p.forward_live, p.backward_live,
                            p.step_extra_bytes, p.flops_forward + p.flops_backward, -group.objective, *shared])


def test_no_kept_prefix_is_beaten_in_every_cost_and_in_a_sum_by_another_kept_one(monkeypatch):
    """After every block, among prefixes with the same obligations, none is kept beside another that is no
    worse in any cost and has a higher objective or fewer FLOPs, gradient or kept bytes (its completions come
    first in the answer order), even when the other is later in state order."""
    profile = with_recompute(make_transformer_profile(num_blocks=6, lora_ranks=(4, 8)))
    groups, real_prune = [], frontier_module._prune
    monkeypatch.setattr(frontier_module, "_prune", lambda *a: groups.append(real_prune(*a)) or groups[-1])
    build_frontier(profile, ProfilePlanner(profile).goal, row_limit=None)
    checked = 0
    for group in groups:
        values = _amounts(group).astype(np.int64)
        no_worse = (values[:, None, :] <= values[None, :, :]).all(axis=2)  # [i, j]: row i no worse than row j
        sums = values[:, [0, 2, 6, 7]]
        in_a_sum = (sums[:, None, :] < sums[None, :, :]).any(axis=2)
        beaten = no_worse & in_a_sum
        np.fill_diagonal(beaten, False)
        assert not beaten.any()
        checked += len(values)
    assert checked > 1000


@pytest.mark.parametrize("seed", range(3))
def test_least_per_class_is_the_first_in_answer_order_among_the_least(seed):
    """least() per class (the least value with the objective set aside, then the answer under that value) names
    the configuration brute force does: of those of least value within the other caps, the first in answer
    order; the whole frontier names the same."""
    profile, configs = case(3, seed)
    per_class, whole = ProfilePlanner(profile, row_limit=0), ProfilePlanner(profile, row_limit=None)
    values = {MEMORY: lambda c: c.peak_bytes_predicted, COMPUTE: flops, UPLOAD: lambda c: c.upload_bytes}
    rng = random.Random(seed)
    for _ in range(4):
        caps = random_caps(rng, configs)
        for b, (name, value) in enumerate(values.items()):
            within = [c for c in configs if all(v(c[2]) <= cap for i, (v, cap) in
                                                enumerate(zip(values.values(), caps)) if i != b)]
            expected = None
            if within:
                least = min(value(c[2]) for c in within)
                first = min((c for c in within if value(c[2]) == least), key=lambda c: answer_key(per_class.goal, c))
                expected = (first[0], least)
            others = tuple(c if i != b else 2**62 for i, c in enumerate(caps))
            assert per_class.least(name, others) == expected
            assert whole.least(name, others) == expected


@pytest.mark.parametrize("seed", range(4))
def test_a_refuted_guess_bounds_the_best_by_the_most_a_dropped_row_could_reach(seed):
    """A bounded build whose guess no row within the caps reaches: the best objective within the caps is at
    most the larger of the best row it found and the largest optimistic objective it dropped (the next guess
    of planner._answer_rows starts there)."""
    profile, configs = case(4, seed)
    goal = ProfilePlanner(profile).goal
    brute, suffix, rng = BruteForce(configs, goal), SuffixBound(profile, goal), random.Random(seed)
    refuted = 0
    for caps, best in drawn(rng, configs, brute, 12):
        value = goal.value(best[0], best[2].trainable_params)
        guess = value + rng.randint(1, max(1, value // 4 + 1))
        rows = build_frontier(profile, goal, bound=Bound(caps, guess, suffix), row_limit=None)
        row = rows.best(caps)
        assert row is None or rows.objective[row] < guess
        found = -math.inf if row is None else rows.objective[row]
        assert value <= max(found, rows.most_dropped)
        refuted += 1
    assert refuted > 0


def test_ranked_sums_are_those_of_the_composed_configuration():
    """The sums the answer order reads are compose()'s: FLOPs, upload and kept (activation) bytes."""
    profile, configs = case(3, 0)
    frontier = ProfilePlanner(profile, row_limit=None).frontier
    for row in range(len(frontier)):
        cost = compose(profile, frontier.states(row))
        assert (frontier.flops_per_step[row], frontier.upload_bytes[row]) == (flops(cost), cost.upload_bytes)
