"""The baselines of `budgetplan compare` and the accuracy benchmark: what each scheme gives a class under its budget.

A baseline must not be denied a memory saving the user would switch on: where the profile measured activation
recomputation, a configuration that does not fit as it is gets one more try with every trained block recomputing.
Expected answers come from composing every candidate directly (compose), not from the code under test.
"""

from __future__ import annotations

import pytest

from budgetplan.execute.compare import scheme_states
from budgetplan.plan import PlanClass
from budgetplan.profile.compose import compose
from budgetplan.profile.profiler import ProfileRequest, profile_model
from fl_helpers import memory_budget, tiny_bert

N = 4  # tiny-bert blocks


@pytest.fixture(scope="module")
def profiles():
    request = ProfileRequest(batch_size=4, seq_len=16, lora_ranks=(4,), measure_configs=False)
    with_recompute = profile_model(tiny_bert(), request)
    without = profile_model(tiny_bert(), ProfileRequest(**{**request.__dict__, "recompute": False}))
    return with_recompute, without


def _peak(profile, states) -> int:
    return compose(profile, states).peak_bytes_predicted


def _class(memory: int) -> PlanClass:
    return PlanClass("c", 1.0, ("frozen",) * N, (), budget=memory_budget(memory))


def test_lora_fits_with_recomputation_where_plain_lora_does_not(profiles):
    profile, without = profiles
    plain, recomputed = ("lora-4",) * N, ("lora-4+recompute",) * N
    assert _peak(profile, recomputed) < _peak(profile, plain)  # the premise: recomputation saves memory here
    between = (_peak(profile, recomputed) + _peak(profile, plain)) // 2
    assert scheme_states(profile, "lora", _class(between), 4) == recomputed
    assert scheme_states(profile, "lora", _class(_peak(profile, plain)), 4) == plain  # plain first when it fits
    assert scheme_states(without, "lora", _class(between), 4) is None  # no recompute states measured: sits out
    assert scheme_states(profile, "lora", _class(_peak(profile, recomputed) - 1), 4) is None


def test_caff_takes_the_largest_k_that_fits_as_it_is_or_recomputing(profiles):
    profile, _ = profiles
    full, full_recomputed = ("trained",) * N, ("trained+recompute",) * N
    peaks = sorted({_peak(profile, s) for s in (full, full_recomputed)}
                   | {_peak(profile, ("frozen",) * (N - k) + ("trained",) * k) for k in range(N)})
    for memory in peaks:
        got = scheme_states(profile, "caff", _class(memory), 4)
        expected = None
        for k in range(N, -1, -1):  # brute force: the largest k with a fitting variant, plain before recomputing
            for trained in ("trained", "trained+recompute"):
                states = ("frozen",) * (N - k) + (trained,) * k
                if expected is None and _peak(profile, states) <= memory:
                    expected = states
            if expected is not None:
                break
        assert got == expected, memory
