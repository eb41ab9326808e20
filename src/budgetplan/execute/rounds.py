"""The round loop: sample clients, train each under its class's configuration, aggregate layer-wise, evaluate.

A fixed loop with small hooks (FedAvg-style). A run directory holds run.json (the settings), plan.json,
checkpoint.pt (global state, history, measurements; written atomically after every round), rounds.jsonl
(one line per round) and measurements.json. Every random draw comes from (seed, round, client), so a resumed
run ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from budgetplan.errors import ConfigError, PlanError
from budgetplan.execute import client as client_mod
from budgetplan.execute.aggregate import expand_lora_upload, layerwise_weighted_mean
from budgetplan.execute.data import Dataset, Partition, dataset_info, load_dataset, partition
from budgetplan.execute.plans import RunPlan, run_plan_to_dict
from budgetplan.execute.setup import load_plan_model, lora_transposed, measure_class
from budgetplan.models.load import LoadedModel

Event = Callable[[str, dict], None]
CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class RunConfig:
    data: str
    rounds: int
    clients: int
    clients_per_round: int
    train: client_mod.TrainSettings
    partition: str = "auto"
    alpha: float = 0.5
    seed: int = 0
    seq_len: int | None = None  # None: the plan's
    data_dir: str | None = None
    max_train: int | None = None
    max_test: int | None = None
    fail_prob: float = 0.0  # chance that a sampled client dies mid-round (simulated flaky devices)
    measure: bool = True

    def identity(self) -> dict:
        """Everything that must match for --resume (the round count may grow)."""
        data = asdict(self)
        data.pop("rounds")
        data.pop("data_dir")
        return data


@dataclass(frozen=True)
class Setup:
    plan: RunPlan
    config: RunConfig
    template: LoadedModel
    dataset: Dataset
    parts: Partition
    class_of: tuple[str, ...]  # device class of each client


def client_seed(seed: int, round_index: int, client: int) -> int:
    return int(np.random.SeedSequence([seed, round_index, client]).generate_state(1)[0] & 0x7FFFFFFF)


def assign_classes(plan: RunPlan, num_clients: int, seed: int) -> tuple[str, ...]:
    """Classes by fleet share (largest remainder), shuffled by seed."""
    shares = np.array([max(c.share, 0.0) for c in plan.classes], dtype=float)
    shares = shares / shares.sum() if shares.sum() > 0 else np.full(len(shares), 1 / len(shares))
    exact = shares * num_clients
    counts = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - counts), kind="stable")[: num_clients - counts.sum()]:
        counts[i] += 1
    names = [c.name for c, n in zip(plan.classes, counts) for _ in range(n)]
    return tuple(names[i] for i in np.random.default_rng(seed).permutation(num_clients))


def prepare(plan: RunPlan, config: RunConfig) -> Setup:
    info = dataset_info(config.data)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)  # the head's initial weights
        template = load_plan_model(plan, info)
    seq_len = config.seq_len or plan.seq_len or 64
    dataset = load_dataset(config.data, template, seq_len=seq_len, data_dir=config.data_dir,
                           max_train=config.max_train, max_test=config.max_test, seed=config.seed)
    parts = partition(dataset, config.clients, how=config.partition, alpha=config.alpha, seed=config.seed)
    return Setup(plan, config, template, dataset, parts, assign_classes(plan, config.clients, config.seed))


@dataclass
class RunState:
    round: int
    global_state: dict
    history: list = field(default_factory=list)
    measurements: dict = field(default_factory=dict)


def start_or_resume(run_dir: Path, setup: Setup, resume: bool) -> RunState:
    settings = {"config": setup.config.identity(), "plan": setup.plan.digest(), "model": setup.template.fingerprint}
    run_file = run_dir / "run.json"
    if resume:
        return _resume(run_dir, settings)
    if (run_dir / CHECKPOINT).exists():
        raise ConfigError(f"{run_dir} already holds a run; pass --resume to continue it or choose a new --out")
    run_dir.mkdir(parents=True, exist_ok=True)
    run_file.write_text(json.dumps({**settings, "rounds": setup.config.rounds}, indent=1) + "\n")
    (run_dir / "plan.json").write_text(json.dumps(run_plan_to_dict(setup.plan), indent=1) + "\n")
    (run_dir / "rounds.jsonl").write_text("")
    return RunState(0, client_mod.global_state_of(setup.template))


def _resume(run_dir: Path, settings: dict) -> RunState:
    if not (run_dir / CHECKPOINT).is_file():
        raise ConfigError(f"--resume: {run_dir} has no {CHECKPOINT}; start the run without --resume")
    saved = json.loads((run_dir / "run.json").read_text())
    for key in ("config", "plan", "model"):
        if json.dumps(saved[key], sort_keys=True) != json.dumps(settings[key], sort_keys=True):
            changed = _changed(saved[key], settings[key]) if key == "config" else key
            raise ConfigError(f"--resume with changed settings ({changed}); resume with the original settings "
                              "or start a new run with another --out")
    data = torch.load(run_dir / CHECKPOINT, map_location="cpu", weights_only=True)
    state = RunState(data["round"], data["global_state"], json.loads(data["history"]), json.loads(data["measurements"]))
    (run_dir / "rounds.jsonl").write_text("".join(json.dumps(r) + "\n" for r in state.history))
    return state


def _changed(old: dict, new: dict) -> str:
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return ", ".join(f"{k}: {old.get(k)} -> {new.get(k)}" for k in keys[:3]) or "settings"


def save_checkpoint(run_dir: Path, state: RunState) -> None:
    """Atomic: a kill leaves either the previous checkpoint or this one, never half of one."""
    tmp = run_dir / (CHECKPOINT + ".tmp")
    torch.save({"round": state.round, "global_state": state.global_state, "history": json.dumps(state.history),
                "measurements": json.dumps(state.measurements)}, tmp)
    os.replace(tmp, run_dir / CHECKPOINT)
    with open(run_dir / "rounds.jsonl", "a") as log:
        log.write(json.dumps(state.history[-1]) + "\n")


def sample_clients(setup: Setup, round_index: int, blocked: set[str]) -> list[int]:
    eligible = [c for c, name in enumerate(setup.class_of)
                if setup.plan.by_name(name).active and name not in blocked]
    count = min(setup.config.clients_per_round, len(eligible))
    rng = np.random.default_rng([setup.config.seed, round_index, 7])
    return sorted(int(c) for c in rng.choice(eligible, size=count, replace=False)) if count else []


def simulated_failure(setup: Setup, round_index: int, client: int) -> int | None:
    """The local step at which a flaky device dies this round, or None (seeded, so resume sees the same)."""
    if setup.config.fail_prob <= 0:
        return None
    rng = np.random.default_rng([setup.config.seed, round_index, client, 11])
    if rng.random() >= setup.config.fail_prob:
        return None
    return int(rng.integers(setup.config.train.local_steps))


def over_budget(plan, measured: dict | None) -> str | None:
    """Why a class cannot run on its device (measured peak above its memory budget), or None."""
    if not measured or "peak_bytes" not in measured or plan.memory_budget_bytes is None:
        return None
    if measured["peak_bytes"] > plan.memory_budget_bytes:
        return (f"measured peak {measured['peak_bytes'] / 2**20:.1f} MiB > memory budget "
                f"{plan.memory_budget_bytes / 2**20:.1f} MiB")
    return None


def train_one(setup: Setup, state: RunState, round_index: int, client: int):
    """(upload ready for aggregation, num_examples, info) or raises ClientDropped / another error."""
    plan = setup.plan.by_name(setup.class_of[client])
    reason = over_budget(plan, state.measurements.get(plan.name))
    if reason:
        raise client_mod.ClientDropped(reason)
    settings = replace(setup.config.train, fail_at_step=simulated_failure(setup, round_index, client))
    data = setup.dataset.train.subset(setup.parts.clients[client])
    result = client_mod.train_client(setup.template, state.global_state, plan, data, settings,
                                     client_seed(setup.config.seed, round_index, client))
    upload = expand_lora_upload(result.upload, state.global_state, plan.lora_alpha_per_rank,
                                lora_transposed(setup.template))
    info = {"client": client, "class": plan.name, "num_examples": result.num_examples, **result.metrics}
    return upload, result.num_examples, info


def run_round(setup: Setup, state: RunState, round_index: int, on_event: Event) -> tuple[dict, dict]:
    """One round: returns (new global state, round record). Failing clients are dropped and reported."""
    start = time.perf_counter()
    sampled = sample_clients(setup, round_index, set())
    on_event("round_start", {"round": round_index, "clients": len(sampled)})
    updates, trained, dropped = [], [], []
    for client in sampled:
        try:
            upload, count, info = train_one(setup, state, round_index, client)
            updates.append((upload, count))
            trained.append(info)
        except (client_mod.ClientDropped, RuntimeError, ValueError, MemoryError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            dropped.append({"client": client, "class": setup.class_of[client], "reason": reason})
        on_event("client_done", {"round": round_index, "client": client})
    new_state = layerwise_weighted_mean(state.global_state, updates)
    client_mod.load_global(setup.template, new_state)
    scores = client_mod.evaluate(setup.template, setup.dataset.test)
    record = {"round": round_index, "sampled": sampled, "trained": trained, "dropped": dropped, **scores,
              "upload_bytes": int(sum(t["upload_bytes"] for t in trained)),
              "flops_planned": _round_flops(setup, trained, state.measurements, planned=True),
              "flops_measured": _round_flops(setup, trained, state.measurements, planned=False),
              "seconds": time.perf_counter() - start}
    on_event("round_end", record)
    return new_state, record


def _round_flops(setup: Setup, trained: list, measurements: dict, planned: bool) -> int | None:
    """Training FLOPs of the round: per-step FLOPs of each trained client's class x local steps."""
    total = 0
    for info in trained:
        if planned:
            per_step = setup.plan.by_name(info["class"]).predicted_flops
        else:
            m = measurements.get(info["class"]) or {}
            per_step = m["flops_forward"] + m["flops_backward"] if "flops_forward" in m else None
        if per_step is None:
            return None
        total += per_step * setup.config.train.local_steps
    return int(total)


def measure_all(setup: Setup, global_state: dict, on_event: Event) -> dict:
    """First-local-step measurement of every active class, on its first client's data."""
    out = {}
    for plan in setup.plan.classes:
        clients = [c for c, name in enumerate(setup.class_of) if name == plan.name]
        if not plan.active:
            continue
        if not clients:  # verify then says why this class could not be checked
            out[plan.name] = {"error": f"no client of this class among the {len(setup.class_of)} clients "
                                       "(assigned by fleet share); run with more --clients"}
            continue
        on_event("measure", {"class": plan.name})
        data = setup.dataset.train.subset(setup.parts.clients[clients[0]])
        out[plan.name] = measure_class(setup.template, global_state, plan, data, setup.plan.batch_size,
                                       setup.config.train.optimizer, setup.config.train.lr,
                                       client_seed(setup.config.seed, 0, clients[0]))
    return out


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    history: list
    measurements: dict
    global_state: dict


def run(plan: RunPlan, config: RunConfig, run_dir: str | Path, resume: bool = False,
        on_event: Event | None = None) -> RunResult:
    """Run (or continue) a federated run to config.rounds; returns its history and final global state."""
    on_event = on_event or (lambda kind, payload: None)
    _check(config)
    run_dir = Path(run_dir)
    setup = prepare(plan, config)
    state = start_or_resume(run_dir, setup, resume)
    if config.measure and not state.measurements:
        state.measurements = measure_all(setup, state.global_state, on_event)
        (run_dir / "measurements.json").write_text(json.dumps(state.measurements, indent=1) + "\n")
    on_event("start", {"rounds": config.rounds, "done": state.round, "partition": setup.parts.kind,
                       "classes": list(setup.class_of)})
    for round_index in range(state.round + 1, config.rounds + 1):
        new_global, record = run_round(setup, state, round_index, on_event)
        state = RunState(round_index, new_global, [*state.history, record], state.measurements)
        save_checkpoint(run_dir, state)
    return RunResult(run_dir, state.history, state.measurements, state.global_state)


def _check(config: RunConfig) -> None:
    for name, value in (("--rounds", config.rounds), ("--clients", config.clients),
                        ("--clients-per-round", config.clients_per_round),
                        ("--local-steps", config.train.local_steps), ("--batch-size", config.train.batch_size)):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    if not 0 <= config.fail_prob < 1:
        raise ConfigError(f"--fail-prob must be in [0, 1), got {config.fail_prob}")
