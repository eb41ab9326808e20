"""Load the model a plan was made for, check it is that model, and measure each class's first local step."""

from __future__ import annotations

from pathlib import Path

import torch

from budgetplan.errors import DataError, PlanError
from budgetplan.execute.client import batches, configure, global_state_of
from budgetplan.execute.data import ASSETS, DatasetInfo, Examples
from budgetplan.execute.records import Measurement
from budgetplan.models.load import LoadedModel, load_model
from budgetplan.plan import Plan, PlanClass
from budgetplan.profile.measure import measure_training_step


def resolve_model_spec(spec: str) -> str:
    """A bundled name, an existing path, or a model file shipped in budgetplan/assets."""
    if not Path(spec).exists() and (ASSETS / spec).is_file():
        return str(ASSETS / spec)
    return spec


def load_plan_model(plan: Plan, info: DatasetInfo) -> LoadedModel:
    """The plan's model with a head for the dataset; refuses a plan made for another model or label count."""
    ctx = plan.context
    if ctx.task != info.task:
        raise PlanError(f"the plan is for task '{ctx.task}' but dataset {info.name} is '{info.task}'; "
                        f"make a plan with a {info.task} profile of the model")
    if info.num_labels is not None and ctx.num_labels not in (None, info.num_labels):
        raise PlanError(f"the plan was made for {ctx.num_labels} labels but {info.name} has {info.num_labels}; "
                        f"profile and solve again with --num-labels {info.num_labels}")
    loaded = load_model(resolve_model_spec(plan.model.load_spec), num_labels=info.num_labels, task=info.task)
    expected = plan.model.fingerprint
    if loaded.fingerprint != expected:
        raise PlanError(f"the plan is for another model (fingerprint {expected[:19]}..., "
                        f"{loaded.name} has {loaded.fingerprint[:19]}...); solve a plan for this model")
    return loaded


def lora_transposed(loaded: LoadedModel) -> frozenset[str]:
    """Weights stored (in, out) — GPT-2's Conv1D — whose LoRA delta must be transposed."""
    return frozenset(f"{name}.weight" for name, m in loaded.model.named_modules() if type(m).__name__ == "Conv1D")


def measure_class(template: LoadedModel, global_state: dict, plan: PlanClass, data: Examples, batch_size: int,
                  optimizer: str, lr: float, seed: int) -> Measurement:
    """Live-tensor peak and FLOPs of the class's first local step on real data, at the plan's batch size."""
    if len(data) == 0:
        raise DataError(f"class {plan.name}: its first client has no data to measure with")
    loaded, trained = configure(template, global_state, plan, seed)
    batch = data.batch(batches(len(data), batch_size, 1, seed)[0])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        step = measure_training_step(loaded.model, batch, optimizer, lr)
    params = dict(loaded.model.named_parameters())
    upload = sum(params[n].numel() * params[n].element_size() for n in trained)
    shape = batch.get("input_ids", batch.get("pixel_values"))
    return Measurement(peak_bytes=step.peak_bytes, flops_forward=step.flops_forward,
                       flops_backward=step.flops_backward, upload_bytes=upload, batch_size=int(shape.shape[0]),
                       seq_len=int(shape.shape[1]) if "input_ids" in batch else None, optimizer=optimizer,
                       uncounted_ops=dict(step.uncounted_ops), source="measured")


def trainable_names_of(template: LoadedModel, block_states: tuple[str, ...],
                       train_embeddings: bool = False) -> tuple[str, ...]:
    """The tensor names a configuration trains (and uploads), found by configuring a copy of the model."""
    plan = PlanClass(name="probe", share=1.0, block_states=tuple(block_states), trainable_names=(),
                     train_embeddings=train_embeddings)
    _, trained = configure(template, global_state_of(template), plan, seed=0)
    return trained
