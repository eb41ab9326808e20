"""One client's local training under its device class's configuration; independent of the round loop.

`train_client` is what a Flower ClientApp calls: global state in, upload (exactly the class's trainable names),
num_examples and metrics out. Everything random (LoRA init, dropout, batch order) is drawn from `seed`, so
the same call gives bit-identical tensors.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from budgetplan.errors import BudgetplanError, ConfigError, PlanError
from budgetplan.execute.data import Examples
from budgetplan.models.load import LoadedModel
from budgetplan.plan import PlanClass
from budgetplan.profile.configure import apply_block_states
from budgetplan.profile.measure import OPTIMIZERS, make_optimizer
from budgetplan.validate import check_options


class ClientDropped(BudgetplanError):
    """A client failed or exceeded its budget; the round goes on without it."""


@dataclass(frozen=True)
class TrainSettings:
    local_steps: int = 5
    batch_size: int = 8
    optimizer: str = "adamw"
    lr: float = 1e-3
    max_seconds: float | None = None  # wall-clock budget of one client's local training
    fail_at_step: int | None = None  # simulate a device that dies before this local step (tests, demos)
    # Learning rate multipliers (lr_groups): LoRA adapters start from zero every round and a new head from random
    # weights, so both move too little at a rate that suits pretrained blocks.
    lora_lr_scale: float = 1.0
    head_lr_scale: float = 1.0

    def __post_init__(self):
        check_options({"--local-steps": self.local_steps, "--batch-size": self.batch_size, "--lr": self.lr,
                       "--client-timeout-s": self.max_seconds, "--lora-lr-scale": self.lora_lr_scale,
                       "--head-lr-scale": self.head_lr_scale})
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer '{self.optimizer}'; use one of: {', '.join(OPTIMIZERS)}")
        if self.fail_at_step is not None and (not isinstance(self.fail_at_step, int) or self.fail_at_step < 0):
            raise ConfigError(f"fail_at_step = {self.fail_at_step!r} must be a local step index >= 0 or None")


@dataclass(frozen=True)
class ClientResult:
    upload: dict[str, Tensor]
    num_examples: int
    metrics: dict[str, float]  # loss_first, loss_last, seconds, upload_bytes


def global_state_of(loaded: LoadedModel) -> dict[str, Tensor]:
    """The global state: every parameter of the task model (no buffers, no LoRA adapters), detached copies."""
    return {name: p.detach().clone() for name, p in loaded.model.named_parameters()}


def load_global(loaded: LoadedModel, global_state: Mapping[str, Tensor]) -> None:
    """Copy the global parameters into a model without adapters; buffers keep their values."""
    missing, unexpected = loaded.model.load_state_dict(dict(global_state), strict=False)
    params = {n for n, _ in loaded.model.named_parameters()}
    missing = [k for k in missing if k in params]
    if missing or unexpected:
        raise PlanError(f"global state does not fit model {loaded.name} (missing {missing[:2]}, unexpected "
                        f"{unexpected[:2]}); the plan or checkpoint is for another model")


def configure(template: LoadedModel, global_state: Mapping[str, Tensor], plan: PlanClass,
              seed: int) -> tuple[LoadedModel, tuple[str, ...]]:
    """A fresh copy of the model at the global state, configured for the class; returns it and its trained names."""
    loaded = copy.deepcopy(template)
    load_global(loaded, global_state)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # peft draws lora_A from the global generator
        trained = apply_block_states(loaded, plan.block_states, plan.train_embeddings,
                                     alpha_per_rank=plan.lora_alpha_per_rank, int8_embeddings=plan.int8_embeddings)
    planned = set(plan.trainable_names)
    if planned and planned != set(trained):
        extra = sorted(planned - set(trained))[:2] or sorted(set(trained) - planned)[:2]
        raise PlanError(f"class {plan.name}: the plan's trainable names differ from what the model trains (e.g. "
                        f"{extra}); the plan was made for another model: re-run 'budgetplan solve' for it")
    return loaded, trained


def batches(num_examples: int, batch_size: int, steps: int, seed: int) -> list[np.ndarray]:
    """Local batch indices: seeded epochs of shuffled examples, cycled; short clients repeat examples."""
    rng = np.random.default_rng(seed)
    order: list[int] = []
    while len(order) < steps * batch_size:
        order.extend(rng.permutation(num_examples).tolist())
    return [np.array(order[i * batch_size:(i + 1) * batch_size]) for i in range(steps)]


def lr_groups(loaded: LoadedModel, settings: TrainSettings) -> list[dict]:
    """Optimizer parameter groups of the trained parameters: trained blocks at lr, LoRA adapters at
    lr x lora_lr_scale, everything outside the block stack (the head, trained embeddings) at lr x head_lr_scale.
    Within a group parameters keep model order; an empty group is left out."""
    prefix = loaded.layout.path + "."
    groups: dict[str, list] = {"blocks": [], "lora": [], "head": []}
    for name, param in loaded.model.named_parameters():
        if param.requires_grad:
            kind = "lora" if "lora_" in name else "blocks" if name.startswith(prefix) else "head"
            groups[kind].append(param)
    scale = {"blocks": 1.0, "lora": settings.lora_lr_scale, "head": settings.head_lr_scale}
    return [{"params": params, "lr": settings.lr * scale[kind]} for kind, params in groups.items() if params]


def train_client(template: LoadedModel, global_state: Mapping[str, Tensor], plan: PlanClass, data: Examples,
                 settings: TrainSettings, seed: int) -> ClientResult:
    """Train the class's configuration for `settings.local_steps` steps on `data`; return the upload."""
    if len(data) == 0:
        raise ClientDropped(f"client of class {plan.name} has no training examples")
    start = time.perf_counter()
    loaded, trained = configure(template, global_state, plan, seed)
    model = loaded.model
    model.train()
    optimizer = make_optimizer(lr_groups(loaded, settings), settings.optimizer, settings.lr)
    losses = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)  # dropout
        for step, index in enumerate(batches(len(data), settings.batch_size, settings.local_steps, seed)):
            _check_budget(settings, step, start)
            loss = model(data.batch(index))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
    params = dict(model.named_parameters())
    upload = {name: params[name].detach().clone() for name in trained}
    upload_bytes = sum(t.numel() * t.element_size() for t in upload.values())
    metrics = {"loss_first": losses[0], "loss_last": losses[-1], "seconds": time.perf_counter() - start,
               "upload_bytes": float(upload_bytes)}
    return ClientResult(upload, len(data), metrics)


def _check_budget(settings: TrainSettings, step: int, start: float) -> None:
    if settings.fail_at_step is not None and step == settings.fail_at_step:
        raise ClientDropped(f"simulated device failure at local step {step}")
    if settings.max_seconds is not None and time.perf_counter() - start > settings.max_seconds:
        raise ClientDropped(f"over its time budget: {time.perf_counter() - start:.1f} s > {settings.max_seconds:g} s "
                            f"after {step} local steps")


@torch.no_grad()
def evaluate(loaded: LoadedModel, test: Examples, batch_size: int = 64) -> dict[str, float]:
    """Accuracy (per token for lm) and mean loss of the model on the test examples."""
    model = loaded.model
    was_training = model.training
    model.eval()
    correct = total = 0
    loss_sum = 0.0
    for begin in range(0, len(test), batch_size):
        batch = test.batch(np.arange(begin, min(begin + batch_size, len(test))))
        logits = model.logits(batch)
        labels = batch["labels"]
        loss_sum += float(torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), reduction="sum"))
        correct += int((logits.argmax(-1) == labels).sum())
        total += labels.numel()
    model.train(was_training)
    return {"accuracy": correct / max(total, 1), "loss": loss_sum / max(total, 1)}
