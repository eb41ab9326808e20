"""The profiler on models users bring: weight-shared blocks, bf16, nn.MultiheadAttention with LoRA, a module
calling F.scaled_dot_product_attention itself, a tied-embedding causal LM, and identical-block sharing.

Each composed number is checked against a direct whole-model run (tests/profile_checks.py).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AlbertConfig, AutoModel, BertConfig, GPT2Config, GPT2LMHeadModel

from budgetplan.errors import ProfileError
from budgetplan.models import load_model, wrap_model
from budgetplan.profile.batch import make_batch
from budgetplan.profile.compose import FROZEN, standard_configs
from budgetplan.profile.configure import apply_block_states
from budgetplan.profile.profiler import ProfileRequest, profile_model
from budgetplan.profile.types import TRAINED
from profile_checks import assert_composition_exact

REQUEST = ProfileRequest(batch_size=2, seq_len=8, lora_ranks=(4,), measure_configs=False)
MIXED = [("lora-4", FROZEN, TRAINED, FROZEN), (TRAINED, "lora-4", FROZEN, "lora-4")]


def _bert(layers=4, **extra):
    config = BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                        intermediate_size=64, max_position_embeddings=64, **extra)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    return AutoModel.from_config(config), config


class SdpaBlock(nn.Module):
    """A user's attention block calling F.scaled_dot_product_attention itself (fused CPU flash kernel)."""

    def __init__(self, width=32, heads=4):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.out = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.fc1, self.fc2 = nn.Linear(width, 2 * width), nn.Linear(2 * width, width)

    def forward(self, x):
        b, s, w = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, s, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, s, w)
        x = x + self.out(attn)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class UserModel(nn.Module):
    """Embeddings, a stack of blocks, a final norm; takes input_ids like a Hugging Face base model."""

    def __init__(self, blocks, width=32, loops=1):
        super().__init__()
        self.embed = nn.Embedding(128, width)
        self.blocks = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(width)
        self.loops = loops

    def forward(self, input_ids, attention_mask=None):
        x = self.embed(input_ids)
        for _ in range(self.loops):
            for block in self.blocks:
                x = block(x)
        return self.norm(x)


def _mha_model():
    torch.manual_seed(0)
    layers = [nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.0, batch_first=True) for _ in range(4)]
    return wrap_model(UserModel(layers), "mha-user", blocks="blocks")


def test_albert_style_shared_blocks_are_refused_in_one_line(tmp_path):
    config = AlbertConfig(vocab_size=128, embedding_size=16, hidden_size=32, num_hidden_layers=4,
                          num_hidden_groups=2, num_attention_heads=4, intermediate_size=64,
                          max_position_embeddings=64)
    AutoModel.from_config(config).save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path))
    with pytest.raises(ProfileError, match=r"block 0 of 'base.encoder.albert_layer_groups' runs 2 times") as err:
        profile_model(loaded, REQUEST)
    assert "\n" not in str(err.value)


def test_a_loop_over_the_blocks_and_blocks_sharing_weights_are_refused():
    looped = wrap_model(UserModel([SdpaBlock(), SdpaBlock()], loops=2), "looped", blocks="blocks")
    with pytest.raises(ProfileError, match="runs 2 times in one forward"):
        profile_model(looped, REQUEST)
    first, second = SdpaBlock(), SdpaBlock()
    second.qkv = first.qkv
    tied = wrap_model(UserModel([first, second]), "tied", blocks="blocks")
    with pytest.raises(ProfileError, match="blocks 0 and 1 .* share the parameter 'qkv.weight'"):
        profile_model(tied, REQUEST)


def test_bf16_model_profiles_in_its_own_dtype_exactly():
    base, config = _bert()
    loaded = wrap_model(base.to(torch.bfloat16), "bert-bf16", config=config, num_labels=3)
    assert loaded.model.head.weight.dtype == torch.bfloat16
    profile = profile_model(loaded, REQUEST)
    assert profile.context.dtype == "torch.bfloat16"
    assert profile.boundary_bytes == 2 * 8 * 32 * 2  # batch x seq x hidden x 2 bytes
    assert profile.blocks[0].states[TRAINED]["input_grad"].trainable_bytes == 2 * sum(
        p.numel() for p in loaded.blocks[0].parameters())
    assert_composition_exact(loaded, profile, REQUEST, standard_configs(profile) + MIXED)


def test_multihead_attention_lora_adapts_only_what_runs_and_is_exact():
    loaded = _mha_model()
    profile = profile_model(loaded, REQUEST)
    targets = profile.context.lora_targets
    assert "self_attn.out_proj" not in targets  # read functionally by nn.MultiheadAttention: never runs
    assert set(targets) == {"linear1", "linear2"}
    assert_composition_exact(loaded, profile, REQUEST, standard_configs(profile) + MIXED)


@pytest.mark.parametrize("make", [_mha_model, lambda: load_model("tiny-bert"), lambda: load_model("tiny-gpt2")])
def test_every_trainable_parameter_gets_a_gradient_in_every_state(make):
    loaded = make()
    batch = make_batch(loaded, 2, 8)
    n = loaded.layout.num_blocks
    for state in ("frozen", TRAINED, "lora-4"):
        for train_embeddings in (False, True):
            fresh = copy.deepcopy(loaded)
            trained = apply_block_states(fresh, (state,) * (n - 1) + (TRAINED,), train_embeddings=train_embeddings)
            fresh.model(batch).backward()
            params = dict(fresh.model.named_parameters())
            assert trained and all(params[name].grad is not None for name in trained), (state, train_embeddings)


def test_a_trainable_parameter_without_gradient_fails_loudly():
    loaded = _mha_model()
    fresh = copy.deepcopy(loaded)
    apply_block_states(fresh, (TRAINED,) * 4)
    for name, module in fresh.blocks[0].named_modules():
        if name == "self_attn.out_proj":
            module.bias.requires_grad_(True)
    fresh.blocks[0].unused = nn.Linear(4, 4)  # trainable, never called
    from budgetplan.profile.measure import measure_training_step

    with pytest.raises(ProfileError, match=r"got no gradient .*unused\.weight"):
        measure_training_step(fresh.model, make_batch(fresh, 2, 8), "adamw")


def test_user_module_calling_sdpa_is_counted_like_the_math_path_and_exact():
    torch.manual_seed(0)
    loaded = wrap_model(UserModel([SdpaBlock() for _ in range(4)]), "sdpa-user", blocks="blocks")
    profile = profile_model(loaded, REQUEST)
    uncounted = {op for b in profile.blocks for s in b.states.values() for c in s.values() for op in c.uncounted_ops}
    assert not uncounted
    assert_composition_exact(loaded, profile, REQUEST, standard_configs(profile) + MIXED)


def test_tied_embedding_lm_keeps_its_tied_head_counted_once():
    config = GPT2Config(vocab_size=128, n_embd=32, n_layer=4, n_head=4, n_inner=64, n_positions=64,
                        bos_token_id=0, eos_token_id=0)
    torch.manual_seed(0)
    loaded = wrap_model(GPT2LMHeadModel(config), "gpt2-lm", task="lm")
    assert loaded.model.head is None and loaded.model.head_source == "model"
    base = loaded.model.base
    assert base.lm_head.weight is base.transformer.wte.weight
    profile = profile_model(loaded, REQUEST)
    assert profile.context.head_source == "model" and profile.context.num_labels == 128
    assert profile.model.num_params == sum(p.numel() for p in base.parameters())  # tied weight once
    assert not any("lm_head" in name for name in profile.post_trainable_names)
    assert_composition_exact(loaded, profile, REQUEST, standard_configs(profile) + MIXED)
    with pytest.raises(ProfileError, match="tied"):
        profile_model(loaded, ProfileRequest(batch_size=2, seq_len=8, lora_ranks=(), train_embeddings=True,
                                             measure_configs=False))


def test_one_measurement_per_distinct_block_equals_measuring_every_block():
    loaded = load_model("tiny-bert")
    shared = profile_model(loaded, REQUEST)
    every = profile_model(loaded, ProfileRequest(**{**REQUEST.__dict__, "share_identical_blocks": False}))
    assert shared.measurement["distinct_blocks"] == 1 and every.measurement["distinct_blocks"] == 4
    assert every.measurement["block_runs"] == 4 * shared.measurement["block_runs"]
    assert shared.blocks == every.blocks
    assert (shared.pre, shared.post) == (every.pre, every.post)


def test_blocks_that_differ_are_each_measured():
    torch.manual_seed(0)
    # Same parameter shapes, different head counts: the attention scores (and their cost) differ in size.
    blocks = [SdpaBlock(32, 4), SdpaBlock(32, 4), SdpaBlock(32, 2), SdpaBlock(32, 2)]
    loaded = wrap_model(UserModel(blocks), "two-kinds", blocks="blocks")
    profile = profile_model(loaded, REQUEST)
    assert profile.measurement["distinct_blocks"] == 2
    assert profile.blocks[0].states == profile.blocks[1].states != profile.blocks[2].states
    assert_composition_exact(loaded, profile, REQUEST, MIXED)
