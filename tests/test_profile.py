"""The profiler's composed numbers against direct runs of whole configurations.

References are independent of the composition: torch's FlopCounterMode on the whole model for FLOPs, a
saved_tensors_hooks collector written here for saved bytes, and the live-tensor peak of a real step.
"""

from __future__ import annotations

import copy
import random

import pytest

from budgetplan.profile.batch import make_batch
from budgetplan.profile.compose import FROZEN, compose, standard_configs
from budgetplan.profile.configure import apply_block_states
from budgetplan.profile.measure import measure_training_step
from budgetplan.profile.types import TRAINED
from profile_checks import direct_run

FAMILIES = ("tiny-bert", "tiny-vit", "tiny-gpt2")
PEAK_TOLERANCE = 0.03


def random_subsets(num_blocks: int, count: int, seed: int) -> list[tuple[str, ...]]:
    """Non-contiguous mixes of frozen, trained and LoRA blocks (not of the last-k form)."""
    rng = random.Random(seed)
    configs = []
    while len(configs) < count:
        states = tuple(rng.choice([FROZEN, TRAINED, "lora-4"]) for _ in range(num_blocks))
        trainable = [i for i, s in enumerate(states) if s != FROZEN]
        contiguous_tail = trainable == list(range(num_blocks - len(trainable), num_blocks))
        if trainable and not contiguous_tail and states not in configs:
            configs.append(states)
    return configs


def configs_for(profile) -> list[tuple[str, ...]]:
    return standard_configs(profile) + random_subsets(profile.num_blocks, 3, seed=profile.num_blocks + 7)


@pytest.mark.parametrize("family", FAMILIES)
def test_composed_flops_and_saved_bytes_equal_direct_runs(tiny_profiles, family):
    loaded, profile, request = tiny_profiles[family]
    batch = make_batch(loaded, request.batch_size, request.seq_len)
    for states in configs_for(profile):
        composed = compose(profile, states)
        forward, backward, saved, _ = direct_run(loaded, states, batch)
        assert (composed.flops_forward, composed.flops_backward) == (forward, backward), states
        assert composed.activation_bytes == saved, states


@pytest.mark.parametrize("family", FAMILIES)
def test_predicted_peak_within_tolerance_of_measured(tiny_profiles, family):
    loaded, profile, request = tiny_profiles[family]
    batch = make_batch(loaded, request.batch_size, request.seq_len)
    worst = 0.0
    for states in configs_for(profile):
        composed = compose(profile, states)
        fresh = copy.deepcopy(loaded)
        apply_block_states(fresh, states)
        measured = measure_training_step(fresh.model, batch, request.optimizer).peak_bytes
        error = abs(composed.peak_bytes_predicted - measured) / measured
        worst = max(worst, error)
        assert error <= PEAK_TOLERANCE, (states, composed.peak_bytes_predicted, measured)
    print(f"{family}: worst peak error {worst:.2%}")


def test_trainable_counts_match_the_configured_model(tiny_profiles):
    loaded, profile, _ = tiny_profiles["tiny-bert"]
    for states in configs_for(profile):
        fresh = copy.deepcopy(loaded)
        trained = apply_block_states(fresh, states)
        params = dict(fresh.model.named_parameters())
        composed = compose(profile, states)
        assert composed.trainable_params == sum(params[n].numel() for n in trained)
        assert composed.upload_bytes == sum(params[n].numel() * params[n].element_size() for n in trained)


def test_lowest_trained_block_computes_no_input_gradient(tiny_profiles):
    _, profile, _ = tiny_profiles["tiny-bert"]
    block = profile.blocks[1].states[TRAINED]
    assert block["no_input_grad"].flops_backward < block["input_grad"].flops_backward
    frozen = profile.blocks[1].states
    assert frozen["frozen_outside"]["no_input_grad"].flops_backward == 0
    assert frozen["frozen_in_path"]["input_grad"].flops_backward > 0


def test_train_embeddings_composition_is_exact():
    from budgetplan.models import load_model
    from budgetplan.profile.profiler import ProfileRequest, profile_model

    request = ProfileRequest(batch_size=2, seq_len=8, lora_ranks=(4,), train_embeddings=True, measure_configs=False)
    loaded = load_model("tiny-bert")
    profile = profile_model(loaded, request)
    batch = make_batch(loaded, 2, 8)
    for states in [("frozen", "frozen", "trained", "frozen"), ("lora-4", "frozen", "frozen", "trained")]:
        composed = compose(profile, states)
        forward, backward, saved, _ = direct_run(loaded, states, batch, train_embeddings=True)
        assert composed.block_states[0] in ("frozen_in_path", "lora-4")
        assert (composed.flops_forward, composed.flops_backward, composed.activation_bytes) == (forward, backward, saved)


def test_profile_lists_no_uncounted_ops_for_standard_families(tiny_profiles):
    for family, (_, profile, _) in tiny_profiles.items():
        parts = [profile.post["input_grad"], profile.pre["frozen_outside"]["no_input_grad"]]
        parts += [c for b in profile.blocks for by_b in b.states.values() for c in by_b.values()]
        uncounted = {op for part in parts for op in part.uncounted_ops}
        assert not uncounted, (family, uncounted)
