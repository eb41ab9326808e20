"""+recompute states measured by the profiler: composed numbers against direct runs of whole configurations.

BERT-, GPT-2- and Llama-style tiny models; references independent of the composition: torch's FlopCounterMode
on the whole model, a saved_tensors_hooks collector (tests/profile_checks.py), the live-tensor peak of a real step.
"""

from __future__ import annotations

import copy
import random

import pytest
import torch

from budgetplan.models import load_model
from budgetplan.profile.batch import make_batch
from budgetplan.profile.compose import FROZEN, standard_configs
from budgetplan.profile.configure import apply_block_states, is_recomputed
from budgetplan.profile.profiler import ProfileRequest, profile_model
from budgetplan.profile.types import INPUT_GRAD, NO_INPUT_GRAD, TRAINED, base_state, is_recompute
from profile_checks import assert_composition_exact

FAMILIES = ("tiny-bert", "tiny-gpt2", "tiny-llama")
MIXES = (FROZEN, TRAINED, "lora-4", "trained+recompute", "lora-4+recompute")


@pytest.fixture(scope="module")
def profiles(tiny_profiles):
    """tiny-bert and tiny-gpt2 from the session fixture (recompute states are profiled by default), tiny-llama here."""
    _, _, request = tiny_profiles["tiny-bert"]
    llama = (load_model("tiny-llama"), profile_model(load_model("tiny-llama"), request), request)
    return {"tiny-bert": tiny_profiles["tiny-bert"], "tiny-gpt2": tiny_profiles["tiny-gpt2"], "tiny-llama": llama}


def recompute_configs(profile) -> list[tuple[str, ...]]:
    """The standard configurations that recompute, then seeded mixes with at least one recomputed block."""
    configs = [c for c in standard_configs(profile) if any(is_recompute(s) for s in c)]
    rng = random.Random(profile.num_blocks)
    while len(configs) < 6:
        states = tuple(rng.choice(MIXES) for _ in range(profile.num_blocks))
        if any(is_recompute(s) for s in states) and states not in configs:
            configs.append(states)
    return configs


@pytest.mark.parametrize("family", FAMILIES)
def test_recompute_configs_compose_exactly_and_peak_within_tolerance(profiles, family):
    loaded, profile, request = profiles[family]
    worst = assert_composition_exact(loaded, profile, request, recompute_configs(profile))
    print(f"{family}: worst peak error with recompute {worst:.2%}")


@pytest.mark.parametrize("family", FAMILIES)
def test_recompute_keeps_only_inputs_and_pays_a_forward_in_backward(profiles, family):
    _, profile, _ = profiles[family]
    for block in profile.blocks:
        for state in [s for s in block.states if is_recompute(s)]:
            for boundary in (INPUT_GRAD, NO_INPUT_GRAD):
                plain, recomputed = block.states[base_state(state)][boundary], block.states[state][boundary]
                assert recomputed.activation_bytes < plain.activation_bytes / 4, (block.index, state)
                assert recomputed.saves_input and not recomputed.saves_output
                assert recomputed.flops_forward == plain.flops_forward
                # the backward re-runs the forward (early stop may skip its last ops, never more)
                extra = recomputed.flops_backward - plain.flops_backward
                assert 0.5 * plain.flops_forward < extra <= plain.flops_forward, (block.index, state, boundary)
                assert recomputed.trainable_bytes == plain.trainable_bytes


def test_recompute_trains_exactly_like_the_plain_state():
    """Same loss and gradients with dropout on: checkpoint restores the RNG state for the re-run forward."""
    loaded = load_model("tiny-bert")
    batch = make_batch(loaded, 4, 16)
    grads = []
    for states in [("frozen", "lora-4", TRAINED, TRAINED), ("frozen", "lora-4+recompute", TRAINED, "trained+recompute")]:
        fresh = copy.deepcopy(loaded)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            apply_block_states(fresh, states)
            torch.manual_seed(1)
            fresh.model.train()(batch).backward()
        grads.append({n: p.grad for n, p in fresh.model.named_parameters() if p.requires_grad})
        assert [is_recomputed(b) for b in fresh.blocks] == ["recompute" in s for s in states]
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], msg=name)


def test_recompute_is_plain_in_eval_and_undone_by_a_plain_state():
    loaded = load_model("tiny-gpt2")
    apply_block_states(loaded, ("trained+recompute",) * 4)
    batch = make_batch(loaded, 2, 8)
    with torch.no_grad():
        loaded.model.eval()(batch)  # no checkpoint without gradients (no warning, no saved inputs)
    clone = copy.deepcopy(loaded)
    assert all(b.forward.block is b for b in clone.blocks)  # the copy's wrappers call the copied blocks
    from budgetplan.profile.configure import set_recompute

    set_recompute(clone.blocks[0], False)
    assert not is_recomputed(clone.blocks[0]) and is_recomputed(clone.blocks[1])


def test_no_recompute_request_profiles_the_plain_states_only():
    request = ProfileRequest(batch_size=2, seq_len=8, lora_ranks=(4,), recompute=False, measure_configs=False)
    assert not any(is_recompute(s) for s in request.block_states)
    assert ProfileRequest(lora_ranks=(4, 8), quantized=False).block_states == (
        "frozen_outside", "frozen_in_path", "trained", "lora-4", "lora-8",
        "trained+recompute", "lora-4+recompute", "lora-8+recompute")
