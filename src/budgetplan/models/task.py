"""The task model: a base network plus a head and a loss, so a training step is one call.

Heads: "classification" mean-pools the last hidden state over real tokens (or patches) and applies a
linear layer; "lm" predicts the next token at every position. The head is trained in every configuration.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TaskModel(nn.Module):
    def __init__(self, base: nn.Module, hidden_size: int, num_labels: int, task: str = "classification"):
        super().__init__()
        if task not in ("classification", "lm"):
            raise ValueError(f"task must be 'classification' or 'lm', not {task!r}")
        self.base = base
        self.task = task
        self.head = nn.Linear(hidden_size, num_labels)

    def hidden_states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        out = self.base(**inputs)
        if isinstance(out, torch.Tensor):
            return out
        if isinstance(out, (tuple, list)):
            return out[0]
        return out.last_hidden_state

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
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
