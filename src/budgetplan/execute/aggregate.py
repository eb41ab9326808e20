"""Layer-wise aggregation: every parameter is averaged over exactly the clients that trained it.

Stock FedAvg requires identical keys in every reply. Here each client uploads only the tensors its device
class trained, so each key is averaged, weighted by num_examples, over the updates that contain it, and keeps
its global value where no update contains it (CAFF, Pfeiffer et al. 2024).

LoRA and full-block updates combine by *merging*: the global state never holds adapters. A LoRA client
uploads its adapter tensors (A, B); before averaging, the server turns them into that client's effective
weight W_global + scaling * (B @ A) under the base weight's key (`expand_lora_upload`). A base weight is then
averaged over every client that changed it, whether by training it fully or through an adapter, and
adapters restart from B = 0 every round, so every client starts from exactly the global model.

A server optimizer then turns the layer-wise average into the next global model (`server_step`): FedAvg takes the
average as it is; FedAvgM and FedAdam treat Delta = average - global as a pseudo-gradient (Reddi et al. 2021,
"Adaptive Federated Optimization", Algorithm 2, without bias correction), only for the tensors that at least one
client trained this round: a tensor nobody trained keeps its value and its optimizer state.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from budgetplan.errors import BudgetplanError
from budgetplan.plan.recipe import DEFAULT_SERVER_OPTIMIZER, SERVER_OPTIMIZERS

LORA_A = ".lora_A."
LORA_B = ".lora_B."


class AggregationError(BudgetplanError):
    """An update does not fit the global state (unknown key, wrong shape, bad example count)."""


def layerwise_weighted_mean(global_state: Mapping[str, Tensor],
                            updates: Sequence[tuple[Mapping[str, Tensor], float]]) -> dict[str, Tensor]:
    """Average each key, weighted by each update's weight (num_examples, samples or 1), over the updates that
    contain it.

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
        if (not isinstance(num_examples, (int, float)) or isinstance(num_examples, bool)
                or not math.isfinite(num_examples) or num_examples < 0):
            raise AggregationError(f"update {index}: its weight (num_examples) must be a non-negative number, got "
                                   f"{num_examples!r}; report how many examples the client trained on")
        for key, tensor in state.items():
            if key not in global_state:
                raise AggregationError(f"update {index} has key '{key}' that is not in the global state; "
                                       "upload only parameters of the global model (expand LoRA uploads first)")
            if tuple(tensor.shape) != tuple(global_state[key].shape):
                raise AggregationError(f"update {index}: '{key}' has shape {tuple(tensor.shape)} but the global "
                                       f"tensor has {tuple(global_state[key].shape)}; the client ran another model")


def trained_keys(updates: Sequence[tuple[Mapping[str, Tensor], float]]) -> frozenset[str]:
    """The tensors at least one update with a positive weight contains: those the round trained."""
    return frozenset(key for state, weight in updates if weight > 0 for key in state)


# ---- server optimizers ---------------------------------------------------------------------------------------

SERVER_LR_DEFAULTS = {"fedavg": 1.0, "fedavgm": 1.0, "fedadam": 1e-3}  # server_lr None: the optimizer's own


@dataclass(frozen=True)
class ServerOptimizer:
    """How the layer-wise average becomes the next global model; lr None: SERVER_LR_DEFAULTS[name].

    momentum is FedAvgM's beta and FedAdam's beta1; beta2 and tau are FedAdam's (tau keeps a coordinate whose
    updates are all ~0 from taking a full step).
    """

    name: str = DEFAULT_SERVER_OPTIMIZER
    lr: float | None = None
    momentum: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-6

    def __post_init__(self):
        if self.name not in SERVER_OPTIMIZERS:
            raise AggregationError(f"unknown server optimizer {self.name!r}; use one of: {', '.join(SERVER_OPTIMIZERS)}")

    @property
    def step_size(self) -> float:
        return SERVER_LR_DEFAULTS[self.name] if self.lr is None else self.lr


def server_step(optimizer: ServerOptimizer, global_state: Mapping[str, Tensor], average: Mapping[str, Tensor],
                trained: Collection[str], state: Mapping[str, Mapping[str, Tensor]]
                ) -> tuple[dict[str, Tensor], dict[str, dict[str, Tensor]]]:
    """(next global state, next optimizer state) from the layer-wise average of this round.

    With Delta = average - global, per tensor in `trained` (float64, stored in the tensor's dtype):
      fedavg:  x' = average (no state)
      fedavgm: m' = momentum * m + Delta;                        x' = x + lr * m'
      fedadam: m' = momentum * m + (1 - momentum) * Delta;
               v' = beta2 * v + (1 - beta2) * Delta**2;          x' = x + lr * m' / (sqrt(v') + tau)
    m and v start at 0. Tensors not in `trained` keep their value and their m and v. The state is
    {"m": {name: tensor}, "v": {...}} (FedAvgM keeps no v), ready for the checkpoint.
    """
    if optimizer.name == "fedavg":
        return dict(average), {}
    moments = {kind: dict(state.get(kind, {})) for kind in (("m",) if optimizer.name == "fedavgm" else ("m", "v"))}
    result = dict(global_state)
    for key in sorted(trained):
        x = global_state[key].to(torch.float64)
        delta = average[key].to(torch.float64) - x
        m = _moment(moments["m"], key, x)
        if optimizer.name == "fedavgm":
            m = optimizer.momentum * m + delta
            step = optimizer.step_size * m
        else:
            m = optimizer.momentum * m + (1 - optimizer.momentum) * delta
            v = optimizer.beta2 * _moment(moments["v"], key, x) + (1 - optimizer.beta2) * delta ** 2
            moments["v"][key] = v.to(global_state[key].dtype)
            step = optimizer.step_size * m / (v.sqrt() + optimizer.tau)
        moments["m"][key] = m.to(global_state[key].dtype)
        result[key] = (x + step).to(global_state[key].dtype)
    return result, moments


def _moment(moments: Mapping[str, Tensor], key: str, like: Tensor) -> Tensor:
    held = moments.get(key)
    return torch.zeros_like(like) if held is None else held.to(torch.float64)


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
