"""Checks shared by profile tests: composed numbers against direct whole-model runs.

References are independent of the composition: torch's FlopCounterMode on the whole model for FLOPs, a
saved_tensors_hooks collector written here for saved bytes, and the live-tensor peak of a real step.
"""

from __future__ import annotations

import copy

import torch

from budgetplan.profile.batch import make_batch
from budgetplan.profile.compose import compose, standard_configs
from budgetplan.profile.configure import apply_block_states
from budgetplan.profile.flops import reference_counter
from budgetplan.profile.measure import measure_training_step

PEAK_TOLERANCE = 0.03


def direct_run(loaded, states, batch, train_embeddings=False, int8_embeddings=False):
    """FLOPs (forward, backward) and saved bytes of one whole configuration, measured on the whole model."""
    fresh = copy.deepcopy(loaded)
    apply_block_states(fresh, states, train_embeddings=train_embeddings, int8_embeddings=int8_embeddings)
    model = fresh.model.train()
    param_ptrs = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor):
        ptr = tensor.untyped_storage().data_ptr()
        if ptr not in param_ptrs and tensor.numel():
            saved[ptr] = tensor.untyped_storage().nbytes()
        return tensor

    with reference_counter() as counter:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = model(batch)
        forward = counter.get_total_flops()
        loss.backward()
    return forward, counter.get_total_flops() - forward, sum(saved.values()), fresh


def assert_composition_exact(loaded, profile, request, configs=None) -> float:
    """Composed FLOPs and saved bytes equal direct runs; predicted peak within 3% of measured. Returns worst error."""
    batch = make_batch(loaded, request.batch_size, request.seq_len)
    worst = 0.0
    for states in configs or standard_configs(profile):
        composed = compose(profile, states)
        forward, backward, saved, fresh = direct_run(loaded, states, batch, request.train_embeddings,
                                                     profile.context.int8_embeddings)
        assert (composed.flops_forward, composed.flops_backward) == (forward, backward), states
        assert composed.activation_bytes == saved, states
        measured = measure_training_step(fresh.model, batch, request.optimizer).peak_bytes
        error = abs(composed.peak_bytes_predicted - measured) / measured
        assert error <= PEAK_TOLERANCE, (states, composed.peak_bytes_predicted, measured)
        worst = max(worst, error)
    return worst
