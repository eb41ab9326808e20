"""The task model: a network with a head and a loss, so a training step is one call.

Two kinds of head:
- the model's own: a saved Hugging Face task model (sequence or image classifier, causal LM) keeps its head
  and trained weights; its logits are the model's own output (`head_source == "model"`);
- budgetplan's: a bare base model gets a linear head in the model's dtype (`head_source == "budgetplan"`).
  "classification" mean-pools the last hidden state over real tokens (or patches); "lm" predicts the next
  token at every position.
The loss is cross-entropy over the logits either way; the head is trained in every configuration.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TASKS = ("classification", "lm")
HEAD_MODEL = "model"
HEAD_BUDGETPLAN = "budgetplan"


def floating_dtype(module: nn.Module) -> torch.dtype:
    """The dtype of a module's floating-point parameters (float32 when it has none)."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)


class TaskModel(nn.Module):
    def __init__(self, base: nn.Module, hidden_size: int | None, num_labels: int, task: str = "classification",
                 own_head: bool = False):
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"task must be 'classification' or 'lm', not {task!r}")
        self.base = base
        self.task = task
        self.num_labels = num_labels
        self.head_source = HEAD_MODEL if own_head else HEAD_BUDGETPLAN
        self.head = None if own_head else nn.Linear(hidden_size, num_labels, dtype=floating_dtype(base))

    def _outputs(self, batch: dict[str, torch.Tensor]):
        return self.base(**{k: v for k, v in batch.items() if k != "labels"})

    def hidden_states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out = self._outputs(batch)
        if isinstance(out, torch.Tensor):
            return out
        if isinstance(out, (tuple, list)):
            return out[0]
        return out.last_hidden_state

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.head is None:
            out = self._outputs(batch)
            if isinstance(out, torch.Tensor):
                return out
            logits = getattr(out, "logits", None)
            return logits if logits is not None else out[0]
        hidden = self.hidden_states(batch)
        if self.task == "lm":
            return self.head(hidden)
        mask = batch.get("attention_mask")
        if mask is None or mask.shape[1] != hidden.shape[1]:
            pooled = hidden.mean(dim=1)
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return self.head(pooled)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training loss of one batch."""
        logits = self.logits(batch)
        labels = batch["labels"]
        if self.task == "lm":
            return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        return F.cross_entropy(logits, labels)
