"""Model loading (safe by default) and block-stack discovery."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from budgetplan.errors import ConfigError, LayoutError, ModelLoadError
from budgetplan.models import find_blocks, load_model, save_model_file
from budgetplan.profile.batch import check_context


@pytest.mark.parametrize("name, path, blocks", [
    ("tiny-bert", "base.encoder.layer", 4), ("tiny-vit", "base.layers", 4),
    ("tiny-gpt2", "base.h", 4), ("tiny-llama", "base.layers", 4),
])
def test_block_stack_found_in_transformers_families(name, path, blocks):
    layout = load_model(name).layout
    assert (layout.path, layout.num_blocks) == (path, blocks)


def test_block_stack_found_in_torch_transformer_encoder():
    layer = nn.TransformerEncoderLayer(d_model=16, nhead=2, dim_feedforward=32, batch_first=True)
    encoder = nn.TransformerEncoder(layer, num_layers=3, enable_nested_tensor=False)
    assert find_blocks(encoder).path == "layers"


class OwnModel(nn.Module):
    """A user's model: embeddings, a short unrelated list, and the real stack."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 8)
        self.adapters = nn.ModuleList([nn.Linear(8, 8), nn.Linear(8, 8)])
        self.stack = nn.ModuleList([nn.Sequential(nn.Linear(8, 32), nn.GELU(), nn.Linear(32, 8)) for _ in range(5)])


def test_block_stack_is_the_largest_repeated_list():
    assert find_blocks(OwnModel()).path == "stack"
    assert find_blocks(OwnModel(), override="adapters").num_blocks == 2


def test_missing_stack_names_what_was_tried_and_how_to_point_at_it():
    with pytest.raises(LayoutError, match=r"--blocks"):
        find_blocks(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
    with pytest.raises(LayoutError, match="no such submodule"):
        find_blocks(OwnModel(), override="nope")


def test_model_file_round_trip_is_safe_and_exact(tmp_path):
    loaded = load_model("tiny-bert", num_labels=3)
    path = tmp_path / "model.pt"
    save_model_file(loaded, path)
    again = load_model(str(path))
    assert again.fingerprint == loaded.fingerprint
    for (name, a), (_, b) in zip(loaded.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(a, b), name


def test_hugging_face_directory_loads(tmp_path):
    loaded = load_model("tiny-gpt2")
    loaded.model.base.save_pretrained(tmp_path)
    again = load_model(str(tmp_path))
    assert again.layout.path == "base.h"
    assert torch.equal(again.model.base.wte.weight, loaded.model.base.wte.weight)


def test_pickled_module_needs_trust(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(load_model("tiny-bert").model.base, path)
    with pytest.raises(ModelLoadError, match="--trust-pickle"):
        load_model(str(path))
    assert load_model(str(path), trust_pickle=True).layout.path == "base.encoder.layer"


def test_corrupt_truncated_and_missing_files(tmp_path):
    good = tmp_path / "model.pt"
    save_model_file(load_model("tiny-bert"), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:2000])
    with pytest.raises(ModelLoadError, match="corrupt"):
        load_model(str(truncated))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(ModelLoadError, match="corrupt"):
        load_model(str(garbage))
    with pytest.raises(ModelLoadError, match="not found"):
        load_model(str(tmp_path / "absent.pt"))


def test_seq_len_beyond_positions_is_refused():
    loaded = load_model("tiny-bert")
    with pytest.raises(ConfigError, match="positions"):
        check_context(loaded, batch_size=2, seq_len=loaded.max_positions + 1)


def test_real_pretrained_minilm_loads_offline():
    loaded = load_model("all-minilm-l6-v2")
    assert loaded.layout.num_blocks == 6
    assert loaded.model.base.config.hidden_size == 384
    # pretrained, not random: the word embeddings of a trained model have a characteristic spread
    assert 0.01 < loaded.model.base.embeddings.word_embeddings.weight.std().item() < 0.2
