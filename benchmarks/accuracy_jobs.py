"""Federated runs of the accuracy benchmark as jobs on a pool of single-threaded worker processes.

A job is (plan, config, run directory), run with the frozen prefix cached (execute/prefix.py); its key hashes
every setting that changes the result, so schemes or fleets that give every class the same configuration share
one run, and a finished run is read back from its directory instead of trained again (a stopped one resumes). Each worker keeps one thread (the runs are small;
two processes on two cores beat one process with two threads) and caches encoded datasets across its jobs.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path

from budgetplan.execute.records import ROUNDS_FILE, RoundRecord, read_rounds
from budgetplan.execute.prefix import cache_prefix
from budgetplan.execute.rounds import RunConfig, run
from budgetplan.plan import Plan
from budgetplan.profile.types import TRAINED, parse_state


# A block below every trained block trains the same whether a plan names it "frozen" or "frozen_outside".
FROZEN_ALIASES = {"frozen_outside": "frozen"}


@dataclass(frozen=True)
class Job:
    plan: Plan
    config: RunConfig
    runs_dir: Path

    @property
    def key(self) -> str:
        what = [[c.active, [FROZEN_ALIASES.get(s, s) for s in c.block_states], c.share] for c in self.plan.classes]
        config = asdict(self.config)
        if self.config.train.lora_lr_scale == self.config.train.head_lr_scale == 1.0:
            del config["train"]["lora_lr_scale"], config["train"]["head_lr_scale"]  # keys from before they existed
        text = json.dumps([what, self.plan.model.fingerprint, config], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def run_dir(self) -> Path:
        return self.runs_dir / self.key


def canonical(plan: Plan, config: RunConfig) -> RunConfig:
    """The same run stated one way: a plan that trains no whole block (the head, maybe LoRA) with equal LoRA and
    head multipliers trains every parameter at lr x multiplier, i.e. the unscaled run at that rate (shared)."""
    train = config.train
    trains_blocks = any(parse_state(s).base == TRAINED for c in plan.classes if c.active for s in c.block_states)
    if trains_blocks or train.lora_lr_scale != train.head_lr_scale:
        return config
    rate = float(f"{train.lr * train.head_lr_scale:.12g}")
    return replace(config, train=replace(train, lr=rate, lora_lr_scale=1.0, head_lr_scale=1.0))


@dataclass(frozen=True)
class Curve:
    accuracy: list[float]  # held-out accuracy after each round (measured)
    loss: list[float]  # held-out loss after each round, nats (measured)
    seconds: float  # wall time of the job in its worker, 0 when read back from a finished run
    flops: list[int | None] = field(default_factory=list)  # device training FLOPs of each round (derived: plan)
    upload: list[int] = field(default_factory=list)  # bytes uploaded by the round's clients (measured)


def finished(job: Job) -> Curve | None:
    """The curve of a run that already reached the job's round count, or None."""
    log = job.run_dir / ROUNDS_FILE
    if not log.is_file():
        return None
    records = read_rounds(log)
    if len(records) < job.config.rounds:
        return None
    return curve_of(records[: job.config.rounds], 0.0)


def curve_of(records: Sequence[RoundRecord], seconds: float) -> Curve:
    """A Curve from round records (rounds.jsonl's or RunResult.history)."""
    return Curve([r.accuracy for r in records], [r.loss for r in records], seconds,
                 [r.flops_planned for r in records], [r.upload_bytes for r in records])


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)
    _cache_datasets()
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()


def _exit_with_parent(parent: int) -> None:
    """A killed driver leaves no worker training on: each worker exits once its parent is gone."""
    while os.getppid() == parent:
        time.sleep(2)
    os._exit(1)


def _cache_datasets() -> None:
    """Every run of one task reads and encodes the same data slice: do it once per worker and slice."""
    from budgetplan.execute import data as data_module  # read at call time by execute/owndata.py

    load = data_module.load_dataset

    @functools.lru_cache(maxsize=8)
    def cached(name, vocab_size, fingerprint, options, box):
        return load(name, box.loaded, **dict(options))

    def wrapper(name, loaded, **options):  # every keyword load_dataset takes, now or later, is part of the key
        return cached(name, loaded.vocab_size, loaded.fingerprint, tuple(sorted(options.items())), _Carry(loaded))

    data_module.load_dataset = wrapper


class _Carry:
    """Carries the model past the cache key: the fingerprint in the key already names the model."""

    def __init__(self, loaded):
        self.loaded = loaded

    def __eq__(self, other):
        return isinstance(other, _Carry)

    def __hash__(self):
        return 0


def run_job(job: Job) -> Curve:
    """Run (or resume) a job with its frozen prefix computed once per example (execute/prefix.py: same result)."""
    done = finished(job)
    if done is not None:
        return done
    start = time.perf_counter()
    resume = (job.run_dir / "checkpoint.pt").exists()
    result = run(job.plan, job.config, job.run_dir, resume=resume, prepare_hook=cache_prefix)
    return curve_of(result.history, time.perf_counter() - start)


class Pool:
    """Submit jobs once each (by key); finished runs come back without a worker."""

    def __init__(self, workers: int):
        self.executor = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker)
        self.futures: dict[str, Future] = {}

    def submit(self, job: Job) -> Future:
        if job.key not in self.futures:
            done = finished(job)
            if done is not None:
                future: Future = Future()
                future.set_result(done)
                self.futures[job.key] = future
            else:
                self.futures[job.key] = self.executor.submit(run_job, job)
        return self.futures[job.key]

    def close(self) -> None:
        self.executor.shutdown(wait=True)
