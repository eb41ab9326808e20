"""Direct measurement of one whole training step: the ground truth the composed numbers are checked against.

The step measured is a steady-state one (optimizer state already exists, gradients set to None before it):
forward, backward, optimizer step. Its peak is the largest number of live storage bytes at any moment,
counting weights, buffers, the batch, optimizer state, activations, gradients and temporaries.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from budgetplan.errors import ConfigError, ProfileError
from budgetplan.profile.flops import OpCounter
from budgetplan.profile.memory import LiveTracker, SavedTensors, storage_bytes
from budgetplan.profile.types import OPTIMIZERS

DEFAULT_LR = 1e-3


def make_optimizer(params: list[nn.Parameter], name: str, lr: float = DEFAULT_LR) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "sgd-momentum":
        return torch.optim.SGD(params, lr=lr, momentum=0.9)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr)
    raise ConfigError(f"unknown optimizer '{name}'; use one of: {', '.join(OPTIMIZERS)}")


def optimizer_state_tensors(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)]


@dataclass(frozen=True)
class StepMeasurement:
    peak_bytes: int
    flops_forward: int
    flops_backward: int
    activation_bytes: int  # saved for backward, unique storages, parameters excluded
    optimizer_state_bytes: int
    cuda_peak_bytes: int | None = None  # torch.cuda.max_memory_allocated during the step, on CUDA
    uncounted_ops: dict[str, int] = field(default_factory=dict)
    source: str = "measured"


def check_gradients(named_params, where: str) -> None:
    """Every trainable parameter got a gradient in the backward just run; else the model trains less than it claims."""
    missing = [name for name, p in named_params if p.requires_grad and p.grad is None]
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ProfileError(f"{len(missing)} trainable parameter(s) of {where} got no gradient in the measured step "
                           f"({shown}): the module holding them does not run in forward (e.g. a weight read "
                           "functionally); its cost and upload would be counted for nothing")


def create_optimizer_state(params: list[nn.Parameter], optimizer: torch.optim.Optimizer) -> None:
    """The optimizer's state as after a first step, from a zero-gradient step (half the cost of a warm-up step)."""
    for param in params:
        param.grad = torch.zeros_like(param)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def measure_training_step(model: nn.Module, batch: dict, optimizer_name: str, lr: float = DEFAULT_LR) -> StepMeasurement:
    """Measure one steady-state training step of `model` (a copy is trained; the model is not changed)."""
    model = copy.deepcopy(model)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, optimizer_name, lr)
    create_optimizer_state(params, optimizer)  # as on a device mid-training
    tracker, counter = LiveTracker(), OpCounter()
    saved = SavedTensors(model.parameters())
    tracker.track([*model.parameters(), *model.buffers(), *batch.values(), *optimizer_state_tensors(optimizer)])
    cuda = any(p.is_cuda for p in params)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_start = torch.cuda.memory_allocated()
    with tracker, counter:
        with saved:
            loss = model(batch)
        flops_forward = counter.flops
        loss.backward()
        flops_backward = counter.flops - flops_forward
        check_gradients(model.named_parameters(), "the model")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    cuda_peak = None
    if cuda:
        torch.cuda.synchronize()
        cuda_peak = torch.cuda.max_memory_allocated() - cuda_start + tracker_baseline(model, batch, optimizer)
    return StepMeasurement(
        peak_bytes=tracker.peak_bytes, flops_forward=flops_forward, flops_backward=flops_backward,
        activation_bytes=saved.bytes_for(), optimizer_state_bytes=storage_bytes(optimizer_state_tensors(optimizer)),
        cuda_peak_bytes=cuda_peak, uncounted_ops=dict(counter.uncounted),
    )


def tracker_baseline(model: nn.Module, batch: dict, optimizer) -> int:
    """Bytes resident before the step (CUDA's counter starts from what was already allocated)."""
    return storage_bytes([*model.parameters(), *model.buffers(), *batch.values(), *optimizer_state_tensors(optimizer)])


def measure_optimizer(params: list[nn.Parameter], name: str, tracker: LiveTracker) -> tuple[int, int]:
    """(optimizer state bytes, peak temporary bytes of one steady-state step) over params that have grads."""
    trainable = [p for p in params if p.requires_grad and p.grad is not None]
    if not trainable:
        return 0, 0
    optimizer = make_optimizer(trainable, name)
    optimizer.step()  # creates the state
    state_bytes = storage_bytes(optimizer_state_tensors(optimizer))
    start = tracker.reset_peak()
    optimizer.step()
    return state_bytes, tracker.peak_bytes - start
