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

from budgetplan.errors import BudgetplanError, PlanError
from budgetplan.execute.apply import seeded_states
from budgetplan.execute.data import Examples
from budgetplan.execute.settings import TrainSettings  # re-exported: declared with the run's other settings
from budgetplan.models.load import LoadedModel
from budgetplan.plan import PlanClass
from budgetplan.profile.measure import make_optimizer


class ClientDropped(BudgetplanError):
    """A client failed or exceeded its budget; the round goes on without it."""


@dataclass(frozen=True)
class ClientResult:
    upload: dict[str, Tensor]
    num_examples: int
    metrics: dict[str, float]  # loss_first, loss_last, seconds, upload_bytes, samples
    optimizer_state: dict[str, dict[str, Tensor]] | None = None  # per trained tensor name: the optimizer's state


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
    trained = seeded_states(loaded, plan, seed)
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


def optimizer_state_by_name(optimizer: torch.optim.Optimizer, model: torch.nn.Module) -> dict[str, dict[str, Tensor]]:
    """The optimizer's per-parameter state (AdamW's step, exp_avg, exp_avg_sq; SGD's momentum buffer) keyed by the
    parameter's name, detached copies (what a client keeps between its rounds)."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: {k: v.detach().clone() if isinstance(v, Tensor) else v for k, v in held.items()}
            for p, held in optimizer.state.items() if id(p) in names}


def restore_optimizer_state(optimizer: torch.optim.Optimizer, model: torch.nn.Module,
                            saved: Mapping[str, Mapping[str, Tensor]]) -> None:
    """Give each parameter the state it had when the client last trained it (same name and shape); a parameter
    it did not train then starts fresh. Tensors are copied, so the saved state is never changed."""
    params = dict(model.named_parameters())
    for name, held in saved.items():
        param = params.get(name)
        if param is None or not param.requires_grad:
            continue
        moments = [v for k, v in held.items() if isinstance(v, Tensor) and k != "step"]
        if any(tuple(v.shape) != tuple(param.shape) for v in moments):
            continue
        optimizer.state[param] = {k: v.clone() if isinstance(v, Tensor) else v for k, v in held.items()}


def train_client(template: LoadedModel, global_state: Mapping[str, Tensor], plan: PlanClass, data: Examples,
                 settings: TrainSettings, seed: int,
                 optimizer_state: Mapping[str, Mapping[str, Tensor]] | None = None) -> ClientResult:
    """Train the class's configuration for `settings.local_steps` steps on `data`; return the upload.

    optimizer_state: the client's optimizer state from its last round (client optimizer state `keep`); the
    result then carries the state after this round's steps."""
    if len(data) == 0:
        raise ClientDropped(f"client of class {plan.name} has no training examples")
    start = time.perf_counter()
    loaded, trained = configure(template, global_state, plan, seed)
    model = loaded.model
    model.train()
    optimizer = make_optimizer(lr_groups(loaded, settings), settings.optimizer, settings.lr)
    if optimizer_state:
        restore_optimizer_state(optimizer, model, optimizer_state)
    losses, samples = [], 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)  # dropout
        for step, index in enumerate(batches(len(data), settings.batch_size, settings.local_steps, seed)):
            _check_budget(settings, step, start)
            loss = model(data.batch(index))
            samples += len(index)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
    params = dict(model.named_parameters())
    upload = {name: params[name].detach().clone() for name in trained}
    upload_bytes = sum(t.numel() * t.element_size() for t in upload.values())
    metrics = {"loss_first": losses[0], "loss_last": losses[-1], "seconds": time.perf_counter() - start,
               "upload_bytes": float(upload_bytes), "samples": samples}
    kept = optimizer_state_by_name(optimizer, model) if optimizer_state is not None else None
    return ClientResult(upload, len(data), metrics, kept)


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
        kept = labels != -100  # padding of a language-modelling row: not a token to predict
        correct += int(((logits.argmax(-1) == labels) & kept).sum())
        total += int(kept.sum())
    model.train(was_training)
    return {"accuracy": correct / max(total, 1), "loss": loss_sum / max(total, 1)}
