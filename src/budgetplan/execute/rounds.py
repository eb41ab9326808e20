"""A federated run: settings, setup (model, data, partition, class of each client), run directory, resume.

The rounds themselves are execute/loop.py's one loop (sample, configure, train, aggregate, record). A run directory holds run.json (the settings), plan.json,
checkpoint.pt (global state, history, measurements, the server optimizer's state and kept client optimizer
states; written atomically after every round), rounds.jsonl
(one line per round) and measurements.json. Every random draw comes from (seed, round, client), so a resumed
run ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from budgetplan.errors import ConfigError
from budgetplan.execute import client as client_mod
from budgetplan.execute import rundir
from budgetplan.execute.data import Dataset, Partition, partition
from budgetplan.execute.loop import EmbeddedTrainer, Event, RunState, Trainer, client_seed, run_rounds
from budgetplan.execute.owndata import plan_info, run_dataset
from budgetplan.execute.records import (MEASUREMENTS_FILE, ROUNDS_FILE, Measurement, RunResult, append_round,
                                        measurements_to_json, rounds_to_json, write_measurements, write_rounds)
from budgetplan.execute.settings import RunConfig, with_defaults  # RunConfig re-exported: declared once there
from budgetplan.execute.setup import load_plan_model, measure_class
from budgetplan.models.load import LoadedModel
from budgetplan.plan import Plan, write_plan

CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class Setup:
    plan: Plan
    config: RunConfig
    template: LoadedModel
    dataset: Dataset
    parts: Partition
    class_of: tuple[str, ...]  # device class of each client


def assign_classes(plan: Plan, num_clients: int, seed: int) -> tuple[str, ...]:
    """Classes by fleet share (largest remainder), shuffled by seed."""
    shares = np.array([max(c.share, 0.0) for c in plan.classes], dtype=float)
    shares = shares / shares.sum() if shares.sum() > 0 else np.full(len(shares), 1 / len(shares))
    exact = shares * num_clients
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: num_clients - counts.sum()]:
        counts[i] += 1
    names = [c.name for c, n in zip(plan.classes, counts) for _ in range(n)]
    return tuple(names[i] for i in np.random.default_rng(seed).permutation(num_clients))


def prepare(plan: Plan, config: RunConfig) -> Setup:
    info, own = plan_info(config, plan)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # the head's initial weights
        template = load_plan_model(plan, info, config.model)
    seq_len = config.seq_len or plan.context.seq_len or 64
    dataset = run_dataset(config, own, template, seq_len)
    parts = partition(dataset, config.clients, how=config.partition, alpha=config.alpha, seed=config.seed)
    return Setup(plan, config, template, dataset, parts, assign_classes(plan, config.clients, config.seed))


def start_or_resume(run_dir: Path, setup: Setup, resume: bool) -> RunState:
    settings = {"config": setup.config.identity(), "plan": setup.plan.digest(), "model": setup.template.fingerprint}
    run_file = run_dir / "run.json"
    if resume and not _before_round_one(run_dir):
        return _resume(run_dir, settings)
    if resume:  # stopped (killed, disk full) before the first checkpoint: start over with the same settings
        _check_settings(run_dir, settings)
    elif (run_dir / CHECKPOINT).exists():
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose a new --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps({**settings, "rounds": setup.config.rounds}, indent=1) + "\n")
    write_plan(setup.plan, run_dir / "plan.json")  # the same plan.json that solve writes
    write_rounds(run_dir / ROUNDS_FILE, ())
    return RunState(0, client_mod.global_state_of(setup.template))


def _resume(run_dir: Path, settings: dict) -> RunState:
    if not (run_dir / CHECKPOINT).is_file():
        raise ConfigError(f"--resume: {run_dir} has no {CHECKPOINT}; start the run without --resume")
    _check_settings(run_dir, settings)
    data = rundir.read_checkpoint(run_dir / CHECKPOINT)
    state = RunState(data.round, data.global_state, data.history, dict(data.measurements), data.server_state,
                     data.client_states)
    write_rounds(run_dir / ROUNDS_FILE, state.history)
    return state


def _before_round_one(run_dir: Path) -> bool:
    """The run wrote its settings but no round yet (no checkpoint, empty log)."""
    log = run_dir / ROUNDS_FILE
    return (not (run_dir / CHECKPOINT).exists() and (run_dir / "run.json").is_file() and log.is_file()
            and log.stat().st_size == 0)


def _check_settings(run_dir: Path, settings: dict) -> None:
    saved = rundir.read_run_settings(run_dir / "run.json", ("config", "plan", "model"))
    saved["config"] = with_defaults(saved["config"])  # settings added since the run started: their defaults
    for key in ("config", "plan", "model"):
        if json.dumps(saved[key], sort_keys=True) != json.dumps(settings[key], sort_keys=True):
            changed = _changed(saved[key], settings[key]) if key == "config" else key
            raise ConfigError(f"--resume with changed settings ({changed}); resume with the original settings "
                              "or start a new run with another --out")


def _changed(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)} -> {new.get(k)}" for k in keys[:3]) or "settings"


def save_checkpoint(run_dir: Path, state: RunState) -> None:
    """Atomic: a kill leaves either the previous checkpoint or this one, never half of one."""
    rundir.write_checkpoint(run_dir, CHECKPOINT, {"round": state.round, "global_state": state.global_state,
                                                  "history": rounds_to_json(state.history),
                                                  "measurements": measurements_to_json(state.measurements),
                                                  "server_state": state.server_state,
                                                  "client_states": state.client_states},
                              state.round)
    append_round(run_dir / ROUNDS_FILE, state.history[-1])
    if state.measurements:  # a fallback rung is measured the first time a client trains it
        write_measurements(run_dir / MEASUREMENTS_FILE, state.measurements)


def measure_all(setup: Setup, global_state: dict, on_event: Event) -> dict[str, Measurement]:
    """First-local-step measurement of every active class, on its first client's data."""
    out = {}
    for plan in setup.plan.classes:
        clients = [c for c, name in enumerate(setup.class_of) if name == plan.name]
        if not plan.active:
            continue
        if not clients:  # verify then says why this class could not be checked
            out[plan.name] = Measurement.failed(f"no client of this class among the {len(setup.class_of)} clients "
                                                "(assigned by fleet share); run with more --clients")
            continue
        on_event("measure", {"class": plan.name})
        data = setup.dataset.train.subset(setup.parts.clients[clients[0]])
        out[plan.name] = measure_class(setup.template, global_state, plan, data, setup.plan.context.batch_size,
                                       setup.config.train.optimizer, setup.config.train.lr,
                                       client_seed(setup.config.seed, 0, clients[0]))
    return out


def run(plan: Plan, config: RunConfig, run_dir: str | Path, resume: bool = False,
        on_event: Event | None = None, trainer: Trainer | None = None,
        prepare_hook: Callable[[Setup], Setup] | None = None) -> RunResult:
    """Run (or continue) a federated run to config.rounds; returns its history and final global state.

    trainer: the train hook (default: the embedded engine's, in this process; Flower's sends plan slices).
    prepare_hook: turns the setup into an equivalent one for the rounds, after the first-step measurements
    (execute/prefix.py's cache_prefix: the frozen prefix computed once per example in simulation).
    """
    on_event = on_event or (lambda kind, payload: None)
    run_dir = Path(run_dir)
    with rundir.locked(run_dir, on_event):
        setup, state = begin(plan, config, run_dir, resume, on_event)
        setup = prepare_hook(setup) if prepare_hook is not None else setup
        state = run_rounds(setup, state, trainer or EmbeddedTrainer(), on_event,
                           lambda s: save_checkpoint(run_dir, s))
    return RunResult(run_dir, state.history, state.measurements, state.global_state)


def begin(plan: Plan, config: RunConfig, run_dir: Path, resume: bool, on_event: Event,
          engine: str = EmbeddedTrainer.name) -> tuple[Setup, RunState]:
    """The start of a run on either engine: setup, run directory, first-step measurements."""
    setup = prepare(plan, config)
    state = start_or_resume(run_dir, setup, resume)
    if config.measure and not state.measurements:
        state.measurements = measure_all(setup, state.global_state, on_event)
        write_measurements(run_dir / MEASUREMENTS_FILE, state.measurements)
    on_event("start", {"rounds": config.rounds, "done": state.round, "partition": setup.parts.kind,
                       "classes": list(setup.class_of), "engine": engine})
    return setup, state
