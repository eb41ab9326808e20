"""One class of a plan applied to a model in process: freeze, inject LoRA, and call it as `model(**batch)`.

apply_class changes the model in place (no copy): the blocks a class does not train are frozen and its LoRA
adapters injected; adapters a previous call added are removed first (each LoRA layer replaced by the layer
it wrapped, unmerged), so applying another plan replaces the first one cleanly. PlannedModel is what an HF
Trainer or a plain PyTorch loop calls: `model(**batch)` returns `.loss` (with labels) and `.logits`; a causal LM's
labels follow Hugging Face's convention (the model shifts them; -100 is ignored), so `DataCollatorForLanguageModeling(
mlm=False)` works as it does with an HF model. (budgetplan's own round loop feeds TaskModel next-token labels, shifted
already: execute/data.py.)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.utils import ModelOutput

from budgetplan.errors import PlanError
from budgetplan.models.load import LoadedModel, fingerprint
from budgetplan.plan import Plan, PlanClass
from budgetplan.profile.configure import apply_block_states


@dataclass
class TaskOutput(ModelOutput):
    """What PlannedModel returns: `.loss` (None without labels) and `.logits`; indexable like an HF output
    (out["loss"], out[0]), which is what an HF Trainer reads."""

    loss: Tensor | None = None
    logits: Tensor | None = None


IGNORE_INDEX = -100  # a label the loss skips (padding, prompt tokens), as in Hugging Face


def task_loss(task: str, logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy per sample; for "lm" the Hugging Face causal-LM convention: `labels` line up with the input
    ids (a collator's `labels = input_ids`) and are shifted here, so position t is scored on label t + 1; labels
    of -100 are skipped. The mean is over the scored tokens."""
    if task == "lm":
        shifted_logits, shifted = logits[:, :-1, :], labels[:, 1:]
        return F.cross_entropy(shifted_logits.reshape(-1, logits.shape[-1]), shifted.reshape(-1),
                               ignore_index=IGNORE_INDEX)
    return F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX)


class PlannedModel(nn.Module):
    """A task model configured for one class; forward(**batch) -> TaskOutput(loss, logits)."""

    accepts_loss_kwargs = False  # HF Trainer: do not pass num_items_in_batch; the loss is a mean already

    def __init__(self, loaded: LoadedModel, plan_class: PlanClass, trainable_names: tuple[str, ...]):
        super().__init__()
        self.task_model = loaded.model
        self.plan_class = plan_class
        self.trainable_names = trainable_names  # names in the task model: what the class uploads

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, pixel_values: Tensor | None = None,
                labels: Tensor | None = None, **extra) -> TaskOutput:
        """model(**batch); the named inputs keep an HF Trainer from dropping the batch's columns."""
        named = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
                 "pixel_values": pixel_values, "labels": labels}
        batch = {**{k: v for k, v in named.items() if v is not None}, **extra}
        inputs = {k: v for k, v in batch.items() if isinstance(v, Tensor) and k != "num_items_in_batch"}
        logits = self.task_model.logits(inputs)
        labels = inputs.get("labels")
        loss = None if labels is None else task_loss(self.task_model.task, logits, labels)
        return TaskOutput(loss=loss, logits=logits)

    def upload(self) -> dict[str, Tensor]:
        """Detached copies of the tensors this class trains: one client's update for layerwise_mean."""
        params = dict(self.task_model.named_parameters())
        return {name: params[name].detach().clone() for name in self.trainable_names}


def remove_adapters(model: nn.Module) -> int:
    """Replace every peft LoRA layer by the layer it wraps (unmerged); returns how many were removed."""
    from peft.tuners.lora import LoraLayer

    wrapped = [(name, module) for name, module in model.named_modules() if isinstance(module, LoraLayer)]
    for name, module in wrapped:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, module.get_base_layer())
    if hasattr(model, "peft_config"):
        del model.peft_config
    return len(wrapped)


def seeded_states(loaded: LoadedModel, plan_class: PlanClass, seed: int) -> tuple[str, ...]:
    """The class's block states set on `loaded` in place, LoRA weights drawn from `seed`; the trained names."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # peft draws lora_A from the global generator
        return apply_block_states(loaded, plan_class.block_states, plan_class.train_embeddings,
                                  alpha_per_rank=plan_class.lora_alpha_per_rank,
                                  int8_embeddings=plan_class.int8_embeddings)


def apply_class(plan: Plan, loaded: LoadedModel, name: str, seed: int = 0) -> PlannedModel:
    """Configure `loaded.model` in place for class `name` of `plan` (see the module docstring)."""
    plan_class = plan.by_name(name)
    if not plan_class.active:
        raise PlanError(f"class {name} sits out of this plan ({plan_class.reason}); pick an active class: "
                        + ", ".join(c.name for c in plan.classes if c.active))
    remove_adapters(loaded.model)
    plan.check_model(fingerprint(loaded.model), loaded.name)
    trained = seeded_states(loaded, plan_class, seed)
    if plan_class.trainable_names and set(plan_class.trainable_names) != set(trained):
        raise PlanError(f"class {name}: the plan's trainable names differ from what the model trains; "
                        "the plan was made for another model: solve a plan for this one")
    return PlannedModel(loaded, plan_class, trained)
