"""Shared fixtures: tiny models built from configs (nothing downloaded), one thread for stable timing."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tiny matmuls on two OpenMP threads spin and fight over two cores; one thread is faster and deterministic.
torch.set_num_threads(1)

PROFILE_BATCH = 4
PROFILE_SEQ = 16


@pytest.fixture(scope="session")
def tiny_profiles():
    """Profiles of the tiny BERT, ViT and GPT-2 families (LoRA rank 4, AdamW), built once per session."""
    from budgetplan.models import load_model
    from budgetplan.profile.profiler import ProfileRequest, profile_model

    request = ProfileRequest(batch_size=PROFILE_BATCH, seq_len=PROFILE_SEQ, lora_ranks=(4,), measure_configs=False)
    return {name: (load_model(name), profile_model(load_model(name), request), request)
            for name in ("tiny-bert", "tiny-vit", "tiny-gpt2")}
