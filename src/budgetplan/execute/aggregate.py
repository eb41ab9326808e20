"""Layer-wise aggregation: every parameter is averaged over exactly the clients that trained it.

Stock FedAvg requires identical keys in every reply. Here each client uploads only the tensors its device
class trained, so each key is averaged, weighted by num_examples, over the updates that contain it, and keeps
its global value where no update contains it (CAFF, Pfeiffer et al. 2024).

LoRA and full-block updates combine by *merging*: the global state never holds adapters. A LoRA client
uploads its adapter tensors (A, B); before averaging, the server turns them into that client's effective
weight W_global + scaling * (B @ A) under the base weight's key (`expand_lora_upload`). A base weight is then
averaged over every client that changed it, whether by training it fully or through an adapter, and
adapters restart from B = 0 every round, so every client starts from exactly the global model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from budgetplan.errors import BudgetplanError

LORA_A = ".lora_A."
LORA_B = ".lora_B."


class AggregationError(BudgetplanError):
    """An update does not fit the global state (unknown key, wrong shape, bad example count)."""


def layerwise_weighted_mean(global_state: Mapping[str, Tensor],
                            updates: Sequence[tuple[Mapping[str, Tensor], int]]) -> dict[str, Tensor]:
    """Average each key, weighted by num_examples, over the updates that contain it.

    Keys no update contains keep their global tensor. Sums run in float64 and are cast back to the
    global tensor's dtype, so the result does not depend on the order of the updates beyond rounding.
    """
    _check_updates(global_state, updates)
    result: dict[str, Tensor] = {}
    for key, current in global_state.items():
        contributions = [(state[key], n) for state, n in updates if key in state and n > 0]
        if not contributions:
            result[key] = current
            continue
        total = sum(n for _, n in contributions)
        acc = torch.zeros(current.shape, dtype=torch.float64)
        for tensor, n in contributions:
            acc += tensor.detach().to(torch.float64) * n
        result[key] = (acc / total).to(current.dtype)
    return result


def _check_updates(global_state: Mapping[str, Tensor], updates) -> None:
    for index, (state, num_examples) in enumerate(updates):
        if not isinstance(num_examples, int) or num_examples < 0:
            raise AggregationError(f"update {index}: num_examples must be a non-negative int, got {num_examples!r}; "
                                   "report how many examples the client trained on")
        for key, tensor in state.items():
            if key not in global_state:
                raise AggregationError(f"update {index} has key '{key}' that is not in the global state; "
                                       "upload only parameters of the global model (expand LoRA uploads first)")
            if tuple(tensor.shape) != tuple(global_state[key].shape):
                raise AggregationError(f"update {index}: '{key}' has shape {tuple(tensor.shape)} but the global "
                                       f"tensor has {tuple(global_state[key].shape)}; the client ran another model")


def base_weight_key(adapter_key: str) -> str:
    """'x.query.lora_A.default.weight' -> 'x.query.weight' (the weight the adapter modifies)."""
    marker = LORA_A if LORA_A in adapter_key else LORA_B
    return adapter_key.split(marker, 1)[0] + ".weight"


def expand_lora_upload(upload: Mapping[str, Tensor], global_state: Mapping[str, Tensor], scaling: float,
                       transposed: frozenset[str] = frozenset()) -> dict[str, Tensor]:
    """Replace adapter pairs by the client's effective base weight; other keys pass through.

    scaling = lora_alpha / rank. `transposed` names base weights stored as (in, out) (GPT-2 Conv1D).
    """
    out = {k: v for k, v in upload.items() if LORA_A not in k and LORA_B not in k}
    for key_a in (k for k in upload if LORA_A in k):
        key_b = key_a.replace(LORA_A, LORA_B)
        if key_b not in upload:
            raise AggregationError(f"upload has '{key_a}' without its pair '{key_b}'; upload both LoRA factors")
        base = base_weight_key(key_a)
        if base not in global_state:
            raise AggregationError(f"adapter '{key_a}' modifies '{base}', which is not in the global state; "
                                   "the client ran another model")
        delta = scaling * (upload[key_b].to(torch.float64) @ upload[key_a].to(torch.float64))
        if base in transposed:
            delta = delta.T
        out[base] = (global_state[base].to(torch.float64) + delta).to(global_state[base].dtype)
    lonely_b = [k for k in upload if LORA_B in k and k.replace(LORA_B, LORA_A) not in upload]
    if lonely_b:
        raise AggregationError(f"upload has '{lonely_b[0]}' without its lora_A pair; upload both LoRA factors")
    return out
