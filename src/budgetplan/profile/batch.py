"""Synthetic batches of the profiling context. Only shapes matter for FLOPs and memory, not values."""

from __future__ import annotations

import torch

from budgetplan.errors import ConfigError
from budgetplan.models.load import LoadedModel
from budgetplan.models.task import floating_dtype


def check_context(loaded: LoadedModel, batch_size: int, seq_len: int | None) -> None:
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if loaded.input_kind != "image" and (seq_len is None or seq_len < 1):
        raise ConfigError(f"--seq-len must be at least 1, got {seq_len}")
    if loaded.input_kind == "text":
        if loaded.max_positions is not None and seq_len > loaded.max_positions:
            raise ConfigError(f"--seq-len {seq_len} is beyond the {loaded.max_positions} positions "
                              f"{loaded.name} was built for; use --seq-len {loaded.max_positions} or less")


def make_batch(loaded: LoadedModel, batch_size: int, seq_len: int | None = None, seed: int = 0) -> dict:
    """Random inputs and labels of the model's kind: token ids and mask for text (no special token but a final
    <eos>, which classifiers that pool the <eos> token need), pixels for images, a waveform or a spectrogram for
    audio (floating inputs in the model's dtype)."""
    generator = torch.Generator().manual_seed(seed)
    num_labels = loaded.model.num_labels
    dtype = floating_dtype(loaded.model)
    if loaded.input_kind == "image":
        size, channels = loaded.image_size, loaded.num_channels or 3
        pixels = torch.randn(batch_size, channels, size, size, generator=generator).to(dtype)
        return {"pixel_values": pixels, "labels": torch.randint(0, num_labels, (batch_size,), generator=generator)}
    seq_len = seq_len or 16
    if loaded.input_kind == "audio":
        shape = audio_shape(loaded, batch_size, seq_len)
        batch = {loaded.input_name: torch.randn(*shape, generator=generator).to(dtype)}
    else:
        batch = {"input_ids": _token_ids(loaded, batch_size, seq_len, generator),
                 "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long)}
    label_shape = (batch_size, seq_len) if loaded.model.task == "lm" else (batch_size,)
    batch["labels"] = torch.randint(0, num_labels, label_shape, generator=generator)
    return batch


def _config(loaded: LoadedModel):
    return getattr(loaded.model.base, "config", None)


def _token_ids(loaded: LoadedModel, batch_size: int, seq_len: int, generator) -> torch.Tensor:
    vocab = loaded.vocab_size or 256
    ids = torch.randint(0, vocab, (batch_size, seq_len), generator=generator)
    config = _config(loaded)
    special = {getattr(config, f"{k}_token_id", None) for k in ("pad", "eos", "bos", "decoder_start")}
    special = {t for t in special if isinstance(t, int) and 0 <= t < vocab}
    plain = next((t for t in range(vocab) if t not in special), 0)
    for token in special:
        ids[ids == token] = plain
    eos = getattr(config, "eos_token_id", None)
    if isinstance(eos, int) and 0 <= eos < vocab:
        ids[:, -1] = eos
    return ids


def audio_shape(loaded: LoadedModel, batch_size: int, seq_len: int) -> tuple[int, ...]:
    """Raw audio long enough for `seq_len` frames after the model's convolutional feature extractor
    (config.conv_kernel / conv_stride), or a (mel bins x frames) spectrogram: Whisper takes exactly
    2 x max_source_positions frames, others `seq_len`."""
    config = _config(loaded)
    if loaded.input_name == "input_values":
        samples = seq_len
        for kernel, stride in reversed(list(zip(getattr(config, "conv_kernel", ()), getattr(config, "conv_stride", ())))):
            samples = (samples - 1) * stride + kernel
        return (batch_size, samples)
    bins = getattr(config, "num_mel_bins", None) or getattr(config, "feature_size", None) or 80
    positions = getattr(config, "max_source_positions", None)
    return (batch_size, bins, 2 * positions if positions else seq_len)


def sequence_length(loaded: LoadedModel, seq_len: int | None) -> int | None:
    """The length the profile is for: tokens, or audio frames the encoder sees (a fixed-length audio encoder's
    own); None for images."""
    if loaded.input_kind == "image":
        return None
    if loaded.input_name == "input_features":
        positions = getattr(_config(loaded), "max_source_positions", None)
        return positions or seq_len
    return seq_len
