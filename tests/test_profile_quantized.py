"""+int8 states measured by the profiler: composed numbers against direct runs of whole configurations.

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
from budgetplan.profile.compose import FROZEN, compose, standard_configs
from budgetplan.profile.configure import apply_block_states, linear_targets
from budgetplan.profile.profiler import ProfileRequest, profile_model
from budgetplan.profile.quantize import QuantizedLinear, quantizable_embeddings, quantize_weight
from budgetplan.profile.types import (
    FROZEN_OUTSIDE, INPUT_GRAD, NO_INPUT_GRAD, PRE_INT8, TRAINED, is_quantized, parse_state, quantized_state,
    state_problem, with_int8_embeddings,
)
from profile_checks import assert_composition_exact

FAMILIES = ("tiny-bert", "tiny-gpt2", "tiny-llama")
MIXES = (FROZEN, "frozen+int8", TRAINED, "lora-4", "lora-4+int8", "lora-4+int8+recompute", "trained+recompute")


@pytest.fixture(scope="module")
def profiles(tiny_profiles):
    """tiny-bert and tiny-gpt2 from the session fixture (+int8 states are profiled by default), tiny-llama here."""
    _, _, request = tiny_profiles["tiny-bert"]
    llama = (load_model("tiny-llama"), profile_model(load_model("tiny-llama"), request), request)
    return {"tiny-bert": tiny_profiles["tiny-bert"], "tiny-gpt2": tiny_profiles["tiny-gpt2"], "tiny-llama": llama}


def quantized_configs(profile) -> list[tuple[str, ...]]:
    """The standard configurations that quantise, then seeded mixes with at least one +int8 block."""
    configs = [c for c in standard_configs(profile) if any(is_quantized(s) for s in c)]
    rng = random.Random(profile.num_blocks + 25)
    configs.append(("frozen+int8",) * profile.num_blocks)  # head only over an int8 body
    while len(configs) < 7:
        states = tuple(rng.choice(MIXES) for _ in range(profile.num_blocks))
        if any("int8" in s for s in states) and states not in configs:
            configs.append(states)
    return configs


@pytest.mark.parametrize("family", FAMILIES)
def test_quantized_configs_compose_exactly_and_peak_within_tolerance(profiles, family):
    loaded, profile, request = profiles[family]
    worst = assert_composition_exact(loaded, profile, request, quantized_configs(profile))
    print(f"{family}: worst peak error with int8 {worst:.2%}")


@pytest.mark.parametrize("family", FAMILIES)
def test_int8_embeddings_compose_exactly_and_save_three_quarters_of_the_tables(profiles, family):
    loaded, profile, request = profiles[family]
    int8 = with_int8_embeddings(profile)
    n = profile.num_blocks
    configs = [(FROZEN,) * n, ("frozen+int8",) * n, (FROZEN,) * (n - 1) + (TRAINED,), quantized_configs(profile)[-1]]
    worst = assert_composition_exact(loaded, int8, request, configs)
    print(f"{family}: worst peak error with int8 embeddings {worst:.2%}")
    tables = quantizable_embeddings(loaded.model, profile.pre_trainable_names)
    weights = sum(loaded.model.get_submodule(t).weight.numel() for t in tables)
    rows = sum(loaded.model.get_submodule(t).weight.shape[0] for t in tables)
    full, quant = profile.pre[FROZEN_OUTSIDE][NO_INPUT_GRAD], profile.pre[PRE_INT8][NO_INPUT_GRAD]
    assert full.param_bytes - quant.param_bytes == 3 * weights - 4 * rows  # int8 + one fp32 scale per row
    assert compose(int8, (FROZEN,) * n).peak_bytes_predicted < compose(profile, (FROZEN,) * n).peak_bytes_predicted
    assert 0 < quant.flops_forward - full.flops_forward < weights  # only the gathered rows are dequantised


@pytest.mark.parametrize("family", FAMILIES)
def test_int8_holds_weights_in_a_quarter_and_pays_one_multiply_per_weight_per_dequantisation(profiles, family):
    loaded, profile, _ = profiles[family]
    block = loaded.blocks[0]
    linears = [block.get_submodule(n) for n in linear_targets(loaded)]
    weights = sum(m.weight.numel() for m in linears)
    channels = sum(m.weight.shape[1] if type(m).__name__ == "Conv1D" else m.weight.shape[0] for m in linears)
    for state in [s for s in profile.blocks[0].states if is_quantized(s)]:
        plain = parse_state(state)
        plain_name = plain.name.replace("+int8", "")
        for boundary, quant in profile.blocks[0].states[state].items():
            full = profile.blocks[0].states[plain_name][boundary]
            # fp32 weights (4 bytes each) become int8 (1 byte) plus one fp32 scale per output channel
            assert full.param_bytes - quant.param_bytes == 4 * weights - weights - 4 * channels, (state, boundary)
            assert quant.flops_forward - full.flops_forward == weights, (state, boundary)
            added = quant.flops_backward - full.flops_backward
            if plain.recompute:  # the re-run forward dequantises again (early stop may skip its last layers)
                assert 0 < added <= 2 * weights, (state, boundary)
            elif boundary == INPUT_GRAD:  # every layer lies on the gradient's path to the input
                assert added == weights, (state, boundary)
            elif plain.lora_rank:  # only layers whose input needs a gradient (not those fed by the block input)
                assert 0 < added < weights, (state, boundary)
            else:
                assert added == 0, (state, boundary)
            assert quant.activation_bytes == full.activation_bytes and quant.trainable_bytes == full.trainable_bytes


def test_int8_saves_memory_in_the_composed_peak(profiles):
    _, profile, _ = profiles["tiny-bert"]
    n = profile.num_blocks
    for plain, quant in [((FROZEN,) * n, ("frozen+int8",) * n), (("lora-4",) * n, ("lora-4+int8",) * n)]:
        assert compose(profile, quant).peak_bytes_predicted < compose(profile, plain).peak_bytes_predicted
        assert compose(profile, quant).upload_bytes == compose(profile, plain).upload_bytes


def test_quantized_layer_matches_the_linear_within_int8_error_and_gives_the_input_gradient():
    torch.manual_seed(0)
    linear = torch.nn.Linear(16, 8)
    q, scale = quantize_weight(linear.weight)
    assert q.dtype == torch.int8 and q.abs().max() == 127 and scale.shape == (8,)
    layer = QuantizedLinear(q, scale, linear.bias)
    x = torch.randn(3, 5, 16, requires_grad=True)
    y = layer(x)
    torch.testing.assert_close(y, linear(x), atol=float(scale.max()) * 16, rtol=0)
    y.sum().backward()
    expected = torch.ones(3, 5, 8) @ (q.float() * scale[:, None])  # the dequantised weight's input gradient
    torch.testing.assert_close(x.grad, expected)
    assert linear.bias.grad is None  # frozen


def test_lora_int8_trains_adapters_only_and_keeps_parameter_names():
    loaded = load_model("tiny-bert")
    fresh = copy.deepcopy(loaded)
    plain = apply_block_states(copy.deepcopy(loaded), ("frozen", "lora-4", "lora-4", TRAINED))
    trained = apply_block_states(fresh, ("frozen+int8", "lora-4+int8", "lora-4+int8+recompute", TRAINED))
    assert trained == plain
    quantised = [n for n, m in fresh.model.named_modules() if isinstance(m, QuantizedLinear)]
    assert len(quantised) == 3 * len(linear_targets(loaded))
    assert not any(n.startswith(f"{loaded.layout.path}.3.") for n in quantised)
    batch = make_batch(fresh, 2, 8)
    fresh.model.train()(batch).backward()
    assert all(p.grad is not None for n, p in fresh.model.named_parameters() if n in trained)


def test_state_names():
    assert quantized_state("frozen_outside") == "frozen_outside+int8"
    assert quantized_state("lora-8+recompute") == "lora-8+int8+recompute"
    assert parse_state("lora-8+int8+recompute").lora_rank == 8
    for bad in ("trained+int8", "trained+int8+recompute", "frozen_outside+int8+recompute", "lora-8+recompute+int8",
                "lora-08+int8", "frozen_outside+int4"):
        with pytest.raises(ValueError):
            parse_state(bad)
        assert state_problem(bad) is not None
    assert state_problem("frozen+int8") is not None  # input-only, like 'frozen'
    assert state_problem("frozen_in_path+int8") is None


def test_request_offers_int8_variants_of_frozen_and_lora_states_only():
    states = ProfileRequest(lora_ranks=(4,)).block_states
    assert [s for s in states if is_quantized(s)] == [
        "frozen_outside+int8", "frozen_in_path+int8", "lora-4+int8", "lora-4+int8+recompute"]
    assert not any(is_quantized(s) for s in ProfileRequest(lora_ranks=(4,), quantized=False).block_states)
