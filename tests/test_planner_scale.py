"""The per-class programme and its bounds (solve/bounds.py) at the scales the frontier no longer reaches.

Brute force stays the reference on small random profiles with every recompute state; on 24- and 32-block
profiles the whole frontier (no bounds at all) is the reference for the per-class programme.
"""

from __future__ import annotations

import random
from dataclasses import replace
from functools import lru_cache

import numpy as np
import pytest
from budgetplan.testing import make_profile, make_transformer_profile, with_recompute
from solve_helpers import BruteForce, all_configs, device, fits, flops, random_caps

from budgetplan.profile.compose import compose
from budgetplan.profile.types import is_recompute
from budgetplan.solve import ProfilePlanner
from budgetplan.solve.caps import COMPUTE, MEMORY, UPLOAD
from budgetplan.solve.planner import NO_CAP
from budgetplan.solve.bounds import SuffixBound
from budgetplan.solve.frontier import Bound, build_frontier, most_reachable


@lru_cache(maxsize=None)
def recompute_case(num_blocks: int, seed: int):
    profile = make_profile(num_blocks=num_blocks, seed=seed, lora_ranks=(4,) if seed % 2 else (4, 8),
                           recompute=True, train_embeddings=seed % 3 == 0, held=seed % 5 != 4)
    return profile, all_configs(profile)


CASES = [(n, s, o) for n in (2, 3) for s in range(6) for o in ("layers", "params", "importance")]
CASES += [(4, s, o) for s in range(2) for o in ("layers", "params")]


@pytest.mark.parametrize("num_blocks,seed,objective", CASES)
def test_per_class_programme_equals_brute_force_with_recompute_states(num_blocks, seed, objective):
    """Every class on its own (row_limit=0: bounds, beam, lower bounds from earlier answers) = enumeration."""
    profile, configs = recompute_case(num_blocks, seed)
    importance = tuple(random.Random(seed).uniform(0, 2) for _ in range(num_blocks))
    planner = ProfilePlanner(profile, objective, importance=importance, row_limit=0)
    assert planner.frontier is None
    brute, rng, recomputed = BruteForce(configs, planner.goal), random.Random(num_blocks * 100 + seed), False
    free = brute.best((10**15, 10**18, 10**15))[2].peak_bytes_predicted
    low = min(c.peak_bytes_predicted for *_, c in configs)
    for draw in range(10):  # every other class bound by memory alone, below the unbudgeted answer's peak
        caps = random_caps(rng, configs) if draw % 2 else (rng.randint(low, free), 10**18, 10**15)
        best, answer = brute.best(caps), planner.answer(caps)
        assert (answer or (None,))[0] == (best[0] if best else None), caps
        recomputed |= best is not None and any(is_recompute(s) for s in best[0])
        # the bound of the whole programme is an upper bound of the best objective within the caps
        reachable = most_reachable(profile, planner.goal, Bound(caps, 0, SuffixBound(profile, planner.goal)))
        assert best is None or reachable >= planner.goal.value(best[0], best[2].trainable_params)
    assert recomputed or num_blocks < 3 or objective != "layers", "no answer recomputes: the case tests nothing new"


@lru_cache(maxsize=None)
def int8_case(num_blocks: int, seed: int):
    profile = make_profile(num_blocks=num_blocks, seed=seed, lora_ranks=(4,), recompute=seed % 2 == 0, quantized=True)
    return profile, all_configs(profile)


@pytest.mark.parametrize("num_blocks,seed", [(n, s) for n in (2, 3) for s in range(4)])
def test_per_class_programme_equals_brute_force_with_int8_states(num_blocks, seed):
    """Weights held in int8 make a later block lower every earlier event: a prefix over the memory cap can come
    back under it, so the per-class programme may not drop it (it did, before bounds.SuffixBound.rx_floor)."""
    profile, configs = int8_case(num_blocks, seed)
    planner = ProfilePlanner(profile, "layers", row_limit=0)
    brute, rng = BruteForce(configs, planner.goal), random.Random(num_blocks * 1000 + seed)
    peaks = sorted({c.peak_bytes_predicted for *_, c in configs})
    for memory in rng.sample(peaks, min(12, len(peaks))):
        caps = (memory, 10**18, 10**15)
        best, answer = brute.best(caps), planner.answer(caps)
        assert (answer or (None,))[0] == (best[0] if best else None), caps


@pytest.mark.parametrize("seed", range(4))
def test_suffix_bound_is_an_upper_bound_after_every_block(seed):
    """For partial configurations of a random 3-block profile with recompute states: the objective so far plus
    the bound is at least the best objective of any completion within the caps (brute force over them)."""
    profile, configs = recompute_case(3, seed)
    planner = ProfilePlanner(profile, "params", row_limit=0)
    rng, suffix = random.Random(seed), SuffixBound(profile, planner.goal)
    for _ in range(4):
        caps = random_caps(rng, configs)
        rows = build_frontier(profile, planner.goal, bound=Bound(caps, 0, suffix), row_limit=None)
        fitting = [c for c in configs if fits(c[2], caps)]
        assert len(rows) <= len(fitting)
        if fitting:  # the bound never drops the answer even with reached = the best objective itself
            best = max(planner.goal.value(s, c.trainable_params) for s, _, c in fitting)
            tight = build_frontier(profile, planner.goal, bound=Bound(caps, best, suffix), row_limit=None)
            assert len(tight) and tight.objective[tight.best(caps)] == best


def _large(num_blocks: int, recompute: bool):
    profile = make_transformer_profile(num_blocks=num_blocks, lora_ranks=() if recompute else (4, 8))
    return with_recompute(profile) if recompute else profile


@pytest.mark.parametrize("num_blocks,recompute", [(24, False), (32, False), (24, True)])
def test_per_class_programme_equals_the_whole_frontier_on_large_profiles(num_blocks, recompute):
    """24 and 32 identical BERT-style blocks x 5 states, and 24 blocks x (frozen, trained, trained+recompute):
    each class's pruned programme gives the whole frontier's answer (caps drawn between head only and
    everything, and one class where nothing fits)."""
    profile = _large(num_blocks, recompute)
    whole, alone = ProfilePlanner(profile, row_limit=None), ProfilePlanner(profile, row_limit=0)
    assert whole.frontier is not None and alone.frontier is None
    head, full = (compose(profile, (s,) * num_blocks) for s in ("frozen", "trained"))
    rng = random.Random(num_blocks)
    for _ in range(5):
        caps = tuple(rng.randint(low, high) for low, high in (
            (head.peak_bytes_predicted, full.peak_bytes_predicted), (flops(head), flops(full)),
            (head.upload_bytes, full.upload_bytes)))
        assert alone.answer(caps) == whole.answer(caps), caps
    nothing = device(head.peak_bytes_predicted - 1, 10**16, 10**12, profile.context.batch_size)
    assert alone.solve_class(nothing)[1] == whole.solve_class(nothing)[1]
    assert np.all(whole.frontier.objective[:-1] >= whole.frontier.objective[1:])


@lru_cache(maxsize=None)
def uneven_case(num_blocks: int, seed: int):
    """Hidden states of a different size before each block and a head whose events dwarf a block's (as a
    language model's logits do): the planner's lower bounds on later events must read each block's own size."""
    base = make_profile(num_blocks=num_blocks, seed=seed, lora_ranks=(4,), recompute=True, quantized=seed % 2 == 0)
    rng = random.Random(seed)
    high = base.boundary_bytes * 3 if seed % 3 else base.boundary_bytes  # every third: all below the first's
    sizes = (base.boundary_bytes,) + tuple(rng.randint(base.boundary_bytes // 8, high) for _ in range(num_blocks))
    big = 8 * base.boundary_bytes
    post = {b: replace(c, forward_extra_bytes=c.forward_extra_bytes + big, backward_extra_bytes=c.backward_extra_bytes
                       + rng.randint(0, big)) for b, c in base.post.items()}
    profile = replace(base, boundary_sizes=sizes, post=post)
    return profile, all_configs(profile)


@pytest.mark.parametrize("num_blocks,seed", [(n, s) for n in (2, 3) for s in range(6)])
def test_frontier_and_per_class_programme_equal_brute_force_with_uneven_hidden_states(num_blocks, seed):
    profile, configs = uneven_case(num_blocks, seed)
    whole, alone = ProfilePlanner(profile, row_limit=None), ProfilePlanner(profile, row_limit=0)
    brute, rng = BruteForce(configs, whole.goal), random.Random(seed)
    for draw in range(12):
        caps = random_caps(rng, configs) if draw % 2 else (rng.choice([c.peak_bytes_predicted for *_, c in configs]),
                                                           10**18, 10**15)
        best = brute.best(caps)
        expected = best[0] if best else None
        assert (whole.answer(caps) or (None,))[0] == expected, caps
        assert (alone.answer(caps) or (None,))[0] == expected, caps


@pytest.mark.parametrize("num_blocks,seed", [(3, 0), (3, 1), (4, 2)])
def test_least_of_each_budget_equals_brute_force(num_blocks, seed):
    """The least memory, FLOPs and upload any configuration needs (what an infeasible class's message names)."""
    profile, configs = uneven_case(num_blocks, seed)
    planner = ProfilePlanner(profile, row_limit=0)
    columns = {MEMORY: lambda c: c.peak_bytes_predicted, COMPUTE: flops, UPLOAD: lambda c: c.upload_bytes}
    for name, value in columns.items():
        states, least = planner.least(name, (NO_CAP,) * 3)
        assert least == min(value(c) for *_, c in configs) == value(compose(profile, states))


def test_least_memory_of_a_large_model_with_int8_states_prunes_to_few_rows():
    """A 24-block model whose head events are the largest (a language model's) with every recompute and int8
    state: the least memory alone used to build the uncapped frontier of 24 x 12 states (minutes to hours); the
    head's events in the suffix bound and head-only in int8 as a known configuration keep the search small."""
    base = make_profile(num_blocks=24, seed=3, lora_ranks=(4, 8), recompute=True, quantized=True)
    post = {b: replace(c, forward_extra_bytes=c.forward_extra_bytes + 40 * base.boundary_bytes)
            for b, c in base.post.items()}
    profile = replace(base, post=post)
    planner = ProfilePlanner(profile, row_limit=0)
    states, least = planner.least(MEMORY, (NO_CAP,) * 3)
    assert least == compose(profile, states).peak_bytes_predicted
    frozen = compose(profile, ("frozen_outside+int8",) * 24).peak_bytes_predicted
    bound = Bound((frozen, NO_CAP, NO_CAP), 0, SuffixBound(profile, planner.goal))
    within = build_frontier(profile, planner.goal, bound=bound, row_limit=None)
    assert within.largest_partial_rows < 200, within.largest_partial_rows
    assert least == min(within.peak_bytes) <= frozen


@pytest.mark.parametrize("seed", range(4))
def test_a_class_inside_an_earlier_class_s_caps_reuses_its_answer_exactly(seed, monkeypatch):
    """Per class, caps within an earlier class's caps that its answer fits get that answer without a
    programme (every configuration before it in answer order fails the larger caps); caps inside an earlier
    class that nothing fits get none; both equal brute force."""
    import budgetplan.solve.planner as planner_module

    profile, configs = recompute_case(3, seed)
    planner = ProfilePlanner(profile, "layers", row_limit=0)
    brute, rng = BruteForce(configs, planner.goal), random.Random(seed)
    builds = []
    real_build = planner_module.build_frontier
    monkeypatch.setattr(planner_module, "build_frontier", lambda *a, **k: builds.append(1) or real_build(*a, **k))
    reused = 0
    for _ in range(8):
        larger = random_caps(rng, configs)
        best = brute.best(larger)
        assert (planner.answer(larger) or (None,))[0] == (best[0] if best else None)
        floor = (best[2].peak_bytes_predicted, flops(best[2]), best[2].upload_bytes) if best else (0, 0, 0)
        inner = tuple(rng.randint(low, high) for low, high in zip(floor, larger))
        before = len(builds)
        inner_best = brute.best(inner)
        assert (planner.answer(inner) or (None,))[0] == (inner_best[0] if inner_best else None), inner
        reused += len(builds) == before
    assert reused == 8
