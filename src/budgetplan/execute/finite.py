"""Training that cannot poison the global model: a client whose loss or update is not finite is never aggregated.

A NaN or an infinity in one upload turns every weight it touches into NaN after averaging, and every later round
inherits it. The round loops (embedded and Flower) ask `non_finite_reason` about each client's result before
aggregating; a client with a reason is dropped from the round and the round record says why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor


def non_finite_reason(upload: Mapping[str, Tensor], metrics: Mapping[str, object]) -> str | None:
    """Why this client result must not be aggregated (a non-finite loss or tensor), or None when it is finite."""
    losses = {k: v for k, v in metrics.items() if k.startswith("loss") and isinstance(v, (int, float))}
    bad_loss = sorted(k for k, v in losses.items() if not math.isfinite(v))
    bad_tensors = [k for k, t in upload.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if not bad_loss and not bad_tensors:
        return None
    parts = []
    if bad_loss:
        parts.append(f"non-finite loss ({', '.join(f'{k} = {losses[k]}' for k in bad_loss)})")
    if bad_tensors:
        parts.append(f"{len(bad_tensors)} non-finite update tensor(s), e.g. {bad_tensors[0]}")
    return "; ".join(parts) + ": not aggregated (lower --lr, or check the client's data)"

