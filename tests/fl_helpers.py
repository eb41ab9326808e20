"""Small plans and run settings for executor tests: tiny-bert, a slice of the drug reviews, few steps."""

from __future__ import annotations

import functools

import torch

from budgetplan.execute.client import TrainSettings
from budgetplan.execute.plans import ClassPlan, RunPlan
from budgetplan.execute.rounds import RunConfig
from budgetplan.execute.setup import upload_keys_for
from budgetplan.models import load_model

LAST_ONE = ("frozen", "frozen", "frozen", "trained")
LAST_TWO = ("frozen", "frozen", "trained", "trained")
LORA_ALL = ("lora-4",) * 4


@functools.lru_cache(maxsize=None)
def tiny_bert(num_labels: int = 3):
    torch.manual_seed(0)
    return load_model("tiny-bert", num_labels=num_labels)


def class_plan(name: str, share: float, states, **kw) -> ClassPlan:
    return ClassPlan(name=name, share=share, block_states=tuple(states), train_embeddings=False,
                     upload_keys=upload_keys_for(tiny_bert(), tuple(states)), **kw)


def tiny_plan(*classes: ClassPlan) -> RunPlan:
    classes = classes or (class_plan("weak", 0.5, LAST_ONE), class_plan("mid", 0.25, LAST_TWO),
                          class_plan("lora", 0.25, LORA_ALL))
    return RunPlan(model="tiny-bert", fingerprint=tiny_bert().fingerprint, task="classification", num_labels=3,
                   batch_size=4, seq_len=16, optimizer="adamw", classes=tuple(classes))


def tiny_config(rounds: int = 3, **kw) -> RunConfig:
    base = dict(data="drugreview", rounds=rounds, clients=6, clients_per_round=4,
                train=TrainSettings(local_steps=2, batch_size=4, lr=1e-3), max_train=120, max_test=24, seq_len=16,
                measure=False)
    base.update(kw)
    return RunConfig(**base)
