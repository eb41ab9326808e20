"""Simulation speed-up: the blocks no class trains (the frozen prefix) computed once per example, not every step.

Blocks below every class's lowest trainable block, with no class training the embeddings, keep their global
weights for the whole run (nobody uploads them), so their output for an example never changes:
- in evaluation (eval mode, no dropout) always: the test set's prefix outputs are computed once;
- in training only where the prefix draws no randomness (no active dropout before the first trained block):
  checked by running the prefix twice in train mode from different RNG states and comparing the outputs and the
  RNG state it leaves (a prefix with dropout would make every step's output differ and shift the later blocks'
  dropout masks; then training runs the whole model and only evaluation is cached).
`cache_prefix(setup)` returns the same setup with the prefix replaced by a lookup: every example carries its row
(`ROW`) in its inputs, the base model's pre-hook takes it out, and each prefix block returns the stored output of
the last prefix block for those rows. The run is then the same computation with the prefix's arithmetic done
once, in other batches: outputs agree to float rounding (matrix kernels may round a row differently in a batch of
another size), not bit for bit; tests/test_prefix.py compares a run with the cache to one without.
It is a simulation tool (the benchmark passes it to rounds.run as `prepare_hook`): a deployed client has its own
examples and computes its prefix itself.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np
import torch

from budgetplan.execute.data import Examples
from budgetplan.execute.rounds import Setup
from budgetplan.plan import Plan
from budgetplan.profile.types import is_trainable

ROW = "prefix_row"
BATCH = 64  # rows per forward when the outputs are stored (evaluate()'s batch: same batches for the test set)


class _Stop(Exception):
    """Raised by the capture hook: the rest of the model is not needed."""


@dataclass
class PrefixTable:
    """Stored outputs of the last prefix block, per example row (train rows first, then test rows)."""

    blocks: int  # prefix length
    outputs: list  # per output position: a tensor with one row per example, or a value shared by all
    per_row: list  # per output position: whether it has one row per example
    train_rows: int  # rows 0..train_rows-1 are training examples (0 when training is not cached)
    rows: torch.Tensor | None = None  # the rows of the batch running now (None: run the blocks themselves)
    seconds: float = 0.0

    def __deepcopy__(self, memo):  # every copy of the model answers from this one table
        return self

    def replay(self):
        picked = [o[self.rows] if row else o for o, row in zip(self.outputs, self.per_row)]
        return picked[0] if len(picked) == 1 else tuple(picked)


class _Replaying:
    """Mixed into a prefix block's class: answer from the table when the batch came with its rows."""

    def forward(self, *args, **kwargs):
        table = self._prefix_table
        if table.rows is None:
            return super().forward(*args, **kwargs)
        return table.replay()


def frozen_prefix(plan: Plan) -> int:
    """Leading blocks no active class trains (0 when a class trains the embeddings)."""
    active = [c for c in plan.classes if c.active]
    if not active or any(c.train_embeddings for c in active):
        return 0
    first = [next((i for i, s in enumerate(c.block_states) if is_trainable(s)), len(c.block_states)) for c in active]
    return min(first)


def _blocks(model, path: str):
    return model.get_submodule(path)


def _capture(model, path: str, blocks: int, batch: dict):
    """The output of block `blocks - 1` on `batch` (the later blocks are not run)."""
    seen = []

    def hook(module, args, output):
        seen.append(output)
        raise _Stop

    handle = _blocks(model, path)[blocks - 1].register_forward_hook(hook)
    try:
        model(batch) if "labels" in batch else model.logits(batch)
    except _Stop:
        pass
    finally:
        handle.remove()
    output = seen[0]
    return [output] if isinstance(output, torch.Tensor) else list(output)


def _deterministic(model, path: str, blocks: int, batch: dict) -> bool:
    """The prefix in train mode gives the same output from two RNG states, draws nothing from the RNG, and gives
    what it gives in eval mode (no dropout, no batch statistics)."""
    model.train()
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        runs = []
        for seed in (1, 2):
            torch.manual_seed(seed)
            before = torch.get_rng_state()
            out = _capture(model, path, blocks, batch)
            runs.append((out, torch.equal(before, torch.get_rng_state())))
        model.eval()
        runs.append((_capture(model, path, blocks, batch), True))  # eval mode: no batch statistics either
    model.train()
    first = runs[0][0]
    same = all(_equal(first, out) for out, _ in runs[1:])
    return same and all(untouched for _, untouched in runs)


def _equal(a: list, b: list) -> bool:
    return all(torch.equal(x, y) if isinstance(x, torch.Tensor) else x is y or x == y for x, y in zip(a, b))


def _table(model, path: str, blocks: int, parts: list[Examples]) -> tuple[list, list]:
    """The prefix outputs of every row of `parts` in BATCH-row forwards: (outputs, per_row), per output position."""
    chunks: list[list] = []
    sizes = []
    with torch.no_grad():
        for part in parts:
            for begin in range(0, len(part), BATCH):
                batch = part.batch(np.arange(begin, min(begin + BATCH, len(part))))
                batch.pop("labels")
                chunks.append(_capture(model, path, blocks, batch))
                sizes.append(min(BATCH, len(part) - begin))
    per_row = [all(isinstance(c[i], torch.Tensor) and c[i].dim() and c[i].shape[0] == n for c, n in zip(chunks, sizes))
               for i in range(len(chunks[0]))]
    return [torch.cat([c[i] for c in chunks]) if row else chunks[0][i] for i, row in enumerate(per_row)], per_row


def _with_rows(examples: Examples, start: int) -> Examples:
    rows = torch.arange(start, start + len(examples), dtype=torch.long)
    return Examples({**examples.inputs, ROW: rows}, examples.labels, examples.groups)


def _install(model, path: str, table: PrefixTable) -> None:
    """Prefix blocks answer from the table for the rows the base pre-hook took out of the inputs."""
    def take_rows(module, args, kwargs):
        table.rows = kwargs.pop(ROW, None)
        return args, kwargs

    model.base.register_forward_pre_hook(take_rows, with_kwargs=True)
    for block in list(_blocks(model, path))[: table.blocks]:
        block.__class__ = type(f"Replaying{type(block).__name__}", (_Replaying, type(block)), {})
        block._prefix_table = table


def cache_prefix(setup: Setup) -> Setup:
    """The setup with its frozen prefix computed once (see the module docstring); unchanged without a prefix."""
    blocks = frozen_prefix(setup.plan)
    template, dataset = setup.template, setup.dataset
    if blocks == 0 or len(dataset.test) == 0 or not hasattr(template.model, "base"):
        return setup
    start, path, model = time.perf_counter(), template.layout.path, template.model
    was_training = model.training
    probe = dataset.train.batch(np.arange(min(BATCH, len(dataset.train))))
    train = len(dataset.train) > 0 and _deterministic(model, path, blocks, probe)
    parts = [dataset.train, dataset.test] if train else [dataset.test]
    model.eval()
    outputs, per_row = _table(model, path, blocks, parts)
    model.train(was_training)
    table = PrefixTable(blocks, outputs, per_row, len(dataset.train) if train else 0)
    _install(model, path, table)
    table.seconds = time.perf_counter() - start
    rows_train = _with_rows(dataset.train, 0) if train else dataset.train
    test = _with_rows(dataset.test, table.train_rows)
    cached = dataclasses.replace(dataset, train=rows_train, test=test)
    return dataclasses.replace(setup, dataset=cached)


def prefix_of(setup: Setup) -> PrefixTable | None:
    """The table a cached setup answers from (None when it is not cached)."""
    return getattr(_blocks(setup.template.model, setup.template.layout.path)[0], "_prefix_table", None)
