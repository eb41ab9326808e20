"""Measured block importance: what each block is worth in each trainable state, on a pilot slice of the task.

Method "loss-drop-over-head" (cheap, and predictive of what the plan buys because it measures training itself):
1. Take a seeded pilot slice of the task's training split: `pilot_examples` to train on and `eval_examples`
   to score on (the test split is never touched).
2. From the pretrained weights, train the head alone for `steps` AdamW steps; its drop of the pilot-eval
   loss is the baseline (the head is trained in every configuration).
3. For every block b and trainable state s of the profile, train the head plus block b in state s alone (every
   other block frozen), from the same weights, with the same batches, seed and steps.
value(b, s) = max(0, drop(b, s) - drop(head)) in nats: the extra loss drop block b in state s buys over the head.

Cost: (1 + blocks x trainable states) x steps training steps on a small batch, plus one pilot evaluation
each; the wall seconds are recorded. States that differ from a base state only by how they are executed
("trained+recompute") train the same parameters and get the base state's value.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from budgetplan.errors import ConfigError, PlanError
from budgetplan.execute.data import Examples, dataset_info, load_dataset
from budgetplan.models.load import LoadedModel
from budgetplan.profile.configure import apply_block_states
from budgetplan.profile.measure import make_optimizer
from budgetplan.profile.types import FROZEN_OUTSIDE, Importance, ModelProfile, is_trainable, parse_state

METHOD = "loss-drop-over-head"


@dataclass(frozen=True)
class ImportanceRequest:
    data: str
    steps: int = 8
    batch_size: int = 8
    lr: float = 1e-3
    pilot_examples: int = 64
    eval_examples: int = 64
    seq_len: int = 64
    seed: int = 0
    data_dir: str | None = None

    def __post_init__(self):
        for name in ("steps", "batch_size", "pilot_examples", "eval_examples", "seq_len"):
            if getattr(self, name) < 1:
                raise ConfigError(f"importance --{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"importance --lr must be a positive number, got {self.lr}")


def trained_part(state: str) -> str:
    """The state whose parameters a variant state trains ('trained+recompute' -> 'trained', 'lora-8+int8' ->
    'lora-8'): variants of one state share its measured importance."""
    return parse_state(state).base


def pilot_slices(loaded: LoadedModel, request: ImportanceRequest) -> tuple[Examples, Examples]:
    total = request.pilot_examples + request.eval_examples
    labels = dataset_info(request.data).num_labels
    if labels is not None and loaded.model.head.out_features != labels:
        raise ConfigError(f"dataset {request.data} has {labels} labels but the profiled model's head has "
                          f"{loaded.model.head.out_features}; profile the model with --num-labels {labels}")
    dataset = load_dataset(request.data, loaded, seq_len=request.seq_len, data_dir=request.data_dir,
                           max_train=total, max_test=1, seed=request.seed)
    if len(dataset.train) < 2:
        raise ConfigError(f"dataset {request.data} gave {len(dataset.train)} pilot examples; use a larger slice")
    order = np.random.default_rng(request.seed).permutation(len(dataset.train))
    cut = max(1, min(request.pilot_examples, len(order) - 1))
    return dataset.train.subset(order[:cut]), dataset.train.subset(order[cut:])


def _loss(model, data: Examples, batch_size: int) -> float:
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(data), batch_size):
            index = np.arange(start, min(start + batch_size, len(data)))
            total += model(data.batch(index)).item() * len(index)
            count += len(index)
    model.train()
    return total / count


def loss_drop(template: LoadedModel, states: tuple[str, ...], pilot: Examples, held: Examples,
              request: ImportanceRequest, alpha_per_rank: float, before: float) -> float:
    """Pilot-eval loss drop after `steps` steps training `states` (plus the head) from the template's weights."""
    loaded = copy.deepcopy(template)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(request.seed)
        apply_block_states(loaded, states, alpha_per_rank=alpha_per_rank)
        params = [p for p in loaded.model.parameters() if p.requires_grad]
        optimizer = make_optimizer(params, "adamw", request.lr)
        rng = np.random.default_rng(request.seed)
        for _ in range(request.steps):
            index = rng.choice(len(pilot), size=min(request.batch_size, len(pilot)), replace=False)
            loss = loaded.model(pilot.batch(index))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    after = _loss(loaded.model, held, request.batch_size)
    if not math.isfinite(after):
        raise ConfigError(f"training {states} for importance gave a non-finite loss; lower --lr (now {request.lr})")
    return before - after


def measure_importance(loaded: LoadedModel, profile: ModelProfile, request: ImportanceRequest,
                       tick: Callable[[str], None] | None = None) -> Importance:
    """Importance of every (block, trainable state) of `profile`, measured on `loaded` (the profiled model)."""
    tick = tick or (lambda what: None)
    if loaded.fingerprint != profile.model.fingerprint:
        raise PlanError(f"the profile is for another model than {loaded.name}; profile this model first")
    start = time.perf_counter()
    pilot, held = pilot_slices(loaded, request)
    alpha = profile.context.lora_alpha_per_rank
    before = _loss(loaded.model, held, request.batch_size)
    n = profile.num_blocks
    head = loss_drop(loaded, (FROZEN_OUTSIDE,) * n, pilot, held, request, alpha, before)
    tick("head only")
    measured: dict[tuple[int, str], float] = {}
    blocks = []
    for block in profile.blocks:
        values = {}
        for state in (s for s in block.states if is_trainable(s)):
            key = (block.index, trained_part(state))
            if key not in measured:
                states = tuple(key[1] if i == block.index else FROZEN_OUTSIDE for i in range(n))
                measured[key] = max(0.0, loss_drop(loaded, states, pilot, held, request, alpha, before) - head)
                tick(f"block {block.index} {key[1]}")
            values[state] = round(measured[key], 6)
        blocks.append(values)
    return Importance(method=METHOD, data=request.data, steps=request.steps,
                      seconds=round(time.perf_counter() - start, 3), blocks=tuple(blocks))


def count_runs(profile: ModelProfile) -> int:
    """Training runs measure_importance makes (for a progress bar): the head plus one per block and base state."""
    return 1 + sum(len({trained_part(s) for s in b.states if is_trainable(s)}) for b in profile.blocks)
