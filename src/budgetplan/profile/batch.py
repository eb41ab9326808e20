"""Synthetic batches of the profiling context. Only shapes matter for FLOPs and memory, not values."""

from __future__ import annotations

import torch

from budgetplan.errors import ConfigError
from budgetplan.models.load import LoadedModel
from budgetplan.models.task import floating_dtype


def check_context(loaded: LoadedModel, batch_size: int, seq_len: int | None) -> None:
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if loaded.input_kind == "text":
        if seq_len is None or seq_len < 1:
            raise ConfigError(f"--seq-len must be at least 1, got {seq_len}")
        if loaded.max_positions is not None and seq_len > loaded.max_positions:
            raise ConfigError(f"--seq-len {seq_len} is beyond the {loaded.max_positions} positions "
                              f"{loaded.name} was built for; use --seq-len {loaded.max_positions} or less")


def make_batch(loaded: LoadedModel, batch_size: int, seq_len: int | None = None, seed: int = 0) -> dict:
    """Random inputs and labels of the model's kind: token ids and mask for text, pixels (model dtype) for images."""
    generator = torch.Generator().manual_seed(seed)
    num_labels = loaded.model.num_labels
    if loaded.input_kind == "image":
        size, channels = loaded.image_size, loaded.num_channels or 3
        pixels = torch.randn(batch_size, channels, size, size, generator=generator).to(floating_dtype(loaded.model))
        return {"pixel_values": pixels, "labels": torch.randint(0, num_labels, (batch_size,), generator=generator)}
    seq_len = seq_len or 16
    vocab = loaded.vocab_size or 256
    ids = torch.randint(0, vocab, (batch_size, seq_len), generator=generator)
    batch = {"input_ids": ids, "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long)}
    label_shape = (batch_size, seq_len) if loaded.model.task == "lm" else (batch_size,)
    batch["labels"] = torch.randint(0, num_labels, label_shape, generator=generator)
    return batch
