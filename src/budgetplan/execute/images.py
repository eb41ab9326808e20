"""Images of your own data file as pixel tensors: file paths (relative to the data file's folder) or image bytes
(`datasets`' Image feature: {"bytes": ..., "path": ...}), read with Pillow (`pip install "budgetplan[data]"`),
converted to the model's channels (1: grey, 3: RGB), resized to its image size, scaled to [-1, 1] like the bundled
Fashion-MNIST."""

from __future__ import annotations

import importlib
import io
from pathlib import Path

import numpy as np
import torch

from budgetplan.errors import DataError, ExtraMissingError, first_line
from budgetplan.execute.data import Examples
from budgetplan.execute.sources import RawSplit
from budgetplan.execute.tables import DATA_EXTRA
from budgetplan.models.load import LoadedModel


def image_examples(raw: RawSplit, loaded: LoadedModel, folder: Path) -> Examples:
    pixels = torch.stack([_pixels(value, loaded, folder) for value in raw.items])
    return Examples({"pixel_values": pixels}, torch.as_tensor(raw.labels), raw.groups)


def _pixels(value, loaded: LoadedModel, folder: Path) -> torch.Tensor:
    image = _open(value, folder)
    channels = loaded.num_channels or 3
    image = image.convert("L" if channels == 1 else "RGB")
    if loaded.image_size:
        image = image.resize((loaded.image_size, loaded.image_size))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    return tensor if channels in (1, 3) else tensor[:1].repeat(channels, 1, 1)


def _open(value, folder: Path):
    pil = _pillow()
    if isinstance(value, dict):  # datasets' Image feature
        value = value.get("bytes") or value.get("path")
    try:
        if isinstance(value, (bytes, bytearray)):
            return pil.open(io.BytesIO(value))
        path = folder / str(value)
        return pil.open(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"image {str(value)[:80]!r} cannot be read ({first_line(exc, 100)}); give image file paths "
                        "relative to the data file, or image bytes") from None


def _pillow():
    try:
        return importlib.import_module("PIL.Image")
    except ImportError:
        raise ExtraMissingError(f"reading images needs Pillow; install it with: {DATA_EXTRA}") from None
