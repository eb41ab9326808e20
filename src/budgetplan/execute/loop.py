"""The one round loop, with small hooks: sample, configure, train, aggregate, record.

Both engines run `run_rounds`; they differ only in the `Trainer` (the train hook and which clients are
reachable): the embedded trainer trains clients in this process, Flower's (integrations/flower/server.py)
sends each node its class's slice of the plan and turns the replies into `Reply` values. Sampling, budget
checks, reply checks, layer-wise aggregation, evaluation, round records and checkpoints are the same code,
so with the same seed both engines end with the same global weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
from torch import Tensor

from budgetplan.errors import PlanError, first_line
from budgetplan.execute import client as client_mod
from budgetplan.execute.aggregate import (AggregationError, ServerOptimizer, expand_lora_upload,
                                         layerwise_weighted_mean, server_step, trained_keys)
from budgetplan.execute.data import Dataset, Partition
from budgetplan.execute.finite import non_finite_reason
from budgetplan.execute.ladder import choose_rung, resources_of, simulated
from budgetplan.execute.records import DroppedClient, Measurement, RoundRecord, TrainedClient, measurement_key
from budgetplan.execute.setup import lora_transposed, measure_class
from budgetplan.models.load import LoadedModel
from budgetplan.plan import Plan, PlanClass
from budgetplan.plan.recipe import DEFAULT_AGGREGATION_WEIGHTS

Event = Callable[[str, Any], None]  # (kind, payload): "round_end" carries the RoundRecord, the others small dicts
SAMPLE_STREAM = 7  # clients are drawn from default_rng([seed, round, SAMPLE_STREAM])
FAILURE_STREAM = 11


class LoopSettings(Protocol):
    """The run settings the loop reads (rounds.RunConfig is one)."""

    @property
    def rounds(self) -> int: ...
    @property
    def clients_per_round(self) -> int: ...
    @property
    def seed(self) -> int: ...
    @property
    def fail_prob(self) -> float: ...
    @property
    def train(self) -> client_mod.TrainSettings: ...
    @property
    def max_update_norm(self) -> float | None: ...
    @property
    def aggregation_weights(self) -> str: ...
    @property
    def client_optimizer_state(self) -> str: ...
    @property
    def server_optimizer(self) -> str: ...
    @property
    def server_lr(self) -> float | None: ...
    @property
    def server_momentum(self) -> float: ...
    @property
    def server_beta2(self) -> float: ...
    @property
    def server_tau(self) -> float: ...
    @property
    def ladder(self) -> bool: ...
    @property
    def memory_margin(self) -> float: ...
    @property
    def measure(self) -> bool: ...
    @property
    def free_memory_jitter(self) -> float: ...
    @property
    def free_memory_schedule(self) -> str | None: ...
    @property
    def round_deadline_s(self) -> float | None: ...


def server_optimizer_of(config: LoopSettings) -> ServerOptimizer:
    return ServerOptimizer(config.server_optimizer, config.server_lr, config.server_momentum, config.server_beta2,
                           config.server_tau)


class PreparedRun(Protocol):
    """A prepared run as the loop's hooks read it (rounds.Setup is one; a Protocol, so loop sits below rounds)."""

    @property
    def plan(self) -> Plan: ...
    @property
    def config(self) -> LoopSettings: ...
    @property
    def template(self) -> LoadedModel: ...
    @property
    def dataset(self) -> Dataset: ...
    @property
    def parts(self) -> Partition: ...
    @property
    def class_of(self) -> tuple[str, ...]: ...  # device class of each client


@dataclass
class RunState:
    round: int
    global_state: dict
    history: tuple[RoundRecord, ...] = ()
    measurements: dict[str, Measurement] = field(default_factory=dict)
    server_state: dict = field(default_factory=dict)  # the server optimizer's m (and v) per tensor
    client_states: dict = field(default_factory=dict)  # client -> its optimizer state by tensor name (keep)


@dataclass(frozen=True)
class Job:
    """One sampled client's work this round: its class slice (with its ladder), the rung it trains, its settings,
    its seed and (client optimizer state `keep`) its optimizer state from its last round. An engine whose nodes
    measure their own resources (Flower) lets the node choose the rung."""

    client: int
    plan_class: PlanClass
    settings: client_mod.TrainSettings
    seed: int
    optimizer_state: dict | None = None
    rung: int = 0

    @property
    def trains(self) -> PlanClass:
        """The configuration this job trains: its class at its rung."""
        return self.plan_class.at_rung(self.rung)


@dataclass(frozen=True)
class Reply:
    """What came back for one job: an upload with its weight, or the one-line reason it is missing."""

    client: int
    class_name: str
    upload: dict[str, Tensor] | None = None
    num_examples: int = 0
    metrics: dict = field(default_factory=dict)
    problem: str | None = None
    optimizer_state: dict | None = None  # the client's optimizer state after this round (embedded engine)


class Trainer(Protocol):
    name: str

    def available(self, setup: PreparedRun, round_index: int) -> dict[int, str]:
        """Client -> device class of the clients that can be sampled this round (the embedded engine: all).
        A trainer whose clients measure their own memory (they run elsewhere) sets `measures_on_node = True`."""

    def train(self, setup: PreparedRun, global_state: dict, round_index: int, jobs: list[Job],
              done: Callable[[int], None]) -> list[Reply]:
        """Train every job; one Reply per job (in any order)."""


def client_seed(seed: int, round_index: int, client: int) -> int:
    return int(np.random.SeedSequence([seed, round_index, client]).generate_state(1)[0] & 0x7FFFFFFF)


def sample(setup: PreparedRun, round_index: int, available: dict[int, str]) -> list[int]:
    """Hook 1: a seeded draw among the available clients whose class is active."""
    eligible = sorted(c for c, name in available.items() if setup.plan.by_name(name).active)
    count = min(setup.config.clients_per_round, len(eligible))
    if not count:
        return []
    rng = np.random.default_rng([setup.config.seed, round_index, SAMPLE_STREAM])
    return sorted(int(c) for c in rng.choice(eligible, size=count, replace=False))


def simulated_failure(setup: PreparedRun, round_index: int, client: int) -> int | None:
    """The local step at which a flaky device dies this round, or None (seeded, so resume sees the same)."""
    if setup.config.fail_prob <= 0:
        return None
    rng = np.random.default_rng([setup.config.seed, round_index, client, FAILURE_STREAM])
    if rng.random() >= setup.config.fail_prob:
        return None
    return int(rng.integers(setup.config.train.local_steps))


def over_budget(plan_class: PlanClass, measured: Measurement | None) -> str | None:
    """Why a class cannot run on its device (measured peak above its memory budget), or None."""
    budget = plan_class.budget
    if measured is None or measured.peak_bytes is None or budget is None:
        return None
    if measured.peak_bytes > budget.memory_bytes:
        return (f"measured peak {measured.peak_bytes / 2**20:.1f} MiB > memory budget "
                f"{budget.memory_bytes / 2**20:.1f} MiB")
    return None


def configure(setup: PreparedRun, state: RunState, round_index: int, sampled: list[int],
              class_of: dict[int, str], on_node: bool = False) -> tuple[list[Job], list[DroppedClient]]:
    """Hook 2: a Job per sampled client at the rung that fits the memory it has this round (execute/ladder.py);
    clients of a class over its measured budget, and clients no rung fits, are dropped with the reason.
    `on_node`: the clients measure their own memory (a real Flower node), so only a simulation is judged here."""
    jobs, dropped = [], []
    config = setup.config
    for client in sampled:
        plan_class = setup.plan.by_name(class_of[client])
        reason = over_budget(plan_class, state.measurements.get(plan_class.name))
        choice = None
        if not reason and (simulated(config) or not on_node):
            choice = choose_rung(plan_class, resources_of(config, plan_class, round_index, client),
                                 config.memory_margin, config.train.local_steps, config.ladder)
            reason = choice.reason if choice.rung is None else None
        if reason:
            dropped.append(DroppedClient(client, plan_class.name, reason))
            continue
        settings = replace(config.train, fail_at_step=simulated_failure(setup, round_index, client))
        kept = state.client_states.get(client) if config.client_optimizer_state == "keep" else None
        jobs.append(Job(client, plan_class, settings, client_seed(config.seed, round_index, client),
                        optimizer_state=kept, rung=0 if choice is None else choice.rung))
    return jobs, dropped


def key_mismatch(sent: set[str], planned: set[str]) -> str | None:
    """A one-line description of how an upload's tensor names differ from the class's trainable names, or None."""
    if sent == planned:
        return None
    unexpected, missing = sorted(sent - planned), sorted(planned - sent)
    parts = []
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:2])})")
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:2])})")
    return ("reply keys differ from the plan's trainable names: " + "; ".join(parts)
            + "; the node trained another configuration or model, reply rejected")


def check_shapes(upload: Mapping, global_state: Mapping) -> None:
    """Every tensor of an upload (in global-model names) has the global model's name, shape and dtype."""
    for key, tensor in upload.items():
        if not isinstance(tensor, Tensor):
            raise AggregationError(f"'{key}' is a {type(tensor).__name__}, not a tensor; the node ran other code")
        if key not in global_state:
            raise AggregationError(f"'{key}' is not a tensor of the global model; the node ran another model")
        if tuple(tensor.shape) != tuple(global_state[key].shape):
            raise AggregationError(f"'{key}' has shape {tuple(tensor.shape)}, the global model has "
                                   f"{tuple(global_state[key].shape)}; the node ran another model")
        if tensor.dtype != global_state[key].dtype:
            raise AggregationError(f"'{key}' has dtype {tensor.dtype}, the global model has "
                                   f"{global_state[key].dtype}; the node ran another model or precision")


def update_norm(upload: Mapping[str, Tensor], global_state: Mapping[str, Tensor]) -> float:
    """L2 norm of the update, over every uploaded tensor: sqrt(sum((sent - global)^2)), in float64."""
    total = sum(float((t.double() - global_state[k].double()).pow(2).sum()) for k, t in upload.items())
    return total ** 0.5


@dataclass(frozen=True)
class ReplyBounds:
    """What the server accepts beyond the plan's names, shapes and dtypes: at most `max_examples` examples per
    client (its partition's size; None: unknown), an update no longer than `max_update_norm` (None: any), and at
    most `max_samples` trained samples claimed (local steps x batch size; None: any), so that no node outweighs
    the others under aggregation weights `samples` by claiming more than it could have trained."""

    max_examples: Mapping[int, int] | None = None
    max_update_norm: float | None = None
    max_samples: int | None = None


def out_of_bounds(reply: Reply, upload: Mapping[str, Tensor], global_state: Mapping, bounds: ReplyBounds) -> str | None:
    """Why a finite, well-formed upload is still refused (too many claimed examples, too long an update), or None."""
    limit = None if bounds.max_examples is None else bounds.max_examples.get(reply.client)
    if not isinstance(reply.num_examples, int) or reply.num_examples < 0:
        return f"num_examples {reply.num_examples!r} is not a count; the node ran other code"
    if limit is not None and reply.num_examples > limit:
        return (f"claims {reply.num_examples} examples, its partition holds {limit}; a node may not outweigh "
                "its data, reply rejected")
    if bounds.max_update_norm is not None and upload:
        norm = update_norm(upload, global_state)
        if not norm <= bounds.max_update_norm:
            return (f"update norm {norm:.4g} (measured) > bound {bounds.max_update_norm:g} (--max-update-norm); "
                    "not aggregated (raise the bound or lower --lr if honest clients hit it)")
    return None


def usable_upload(reply: Reply, plan_class: PlanClass, global_state: dict, transposed: frozenset[str],
                  bounds: ReplyBounds = ReplyBounds()):
    """(upload in global-model tensors, None) or (None, why the reply cannot be aggregated): only the tensors the
    class trains, with the plan's names, shapes and dtypes, finite, within the bounds."""
    if reply.problem is not None:
        return None, reply.problem
    if reply.upload is None:
        return None, "reply holds no upload; the node ran other code"
    mismatch = key_mismatch(set(reply.upload), set(plan_class.trainable_names))
    if mismatch:
        return None, mismatch
    try:
        check_types(reply.upload)
        upload = expand_lora_upload(reply.upload, global_state, plan_class.lora_alpha_per_rank, transposed)
        check_shapes(upload, global_state)
    except AggregationError as exc:
        return None, str(exc)
    reason = non_finite_reason(upload, reply.metrics)  # never average a NaN or an infinity into the model
    if reason is None:
        reason = non_finite_reason(reply.upload, {})  # nor one in a LoRA factor whose product hides it
    if reason is None:
        reason = out_of_bounds(reply, upload, global_state, bounds)
    return (None, reason) if reason else (upload, None)


def check_types(upload: Mapping) -> None:
    """The upload's values are floating-point tensors (LoRA factors are checked here, before they are merged)."""
    for key, tensor in upload.items():
        if not isinstance(tensor, Tensor) or not tensor.is_floating_point():
            kind = tensor.dtype if isinstance(tensor, Tensor) else type(tensor).__name__
            raise AggregationError(f"'{key}' is {kind}, not a floating-point tensor; the node ran other code")


def reply_weight(reply: Reply, how: str) -> int:
    """A reply's weight in the layer-wise mean: examples (the client's stored data size), samples (what it trained
    this round, steps x batch, as the client reports it) or uniform (1)."""
    if how == "uniform":
        return 1
    if how == "samples":
        samples = reply.metrics.get("samples")
        if not isinstance(samples, (int, float)) or isinstance(samples, bool) or samples < 0:
            raise AggregationError("the reply does not say how many samples the client trained ('samples' metric); "
                                   "the node runs an older budgetplan: update it or use aggregation weights examples")
        return int(samples)
    return reply.num_examples


def samples_out_of_bounds(reply: Reply, bounds: ReplyBounds) -> str | None:
    samples = reply.metrics.get("samples")
    if bounds.max_samples is not None and isinstance(samples, (int, float)) and samples > bounds.max_samples:
        return (f"claims {samples} trained samples, more than local steps x batch size = {bounds.max_samples}; "
                "the node ran other code")
    return None


def aggregate(plan: Plan, global_state: dict, replies: list[Reply], transposed: frozenset[str], *,
              weights: str = DEFAULT_AGGREGATION_WEIGHTS, bounds: ReplyBounds = ReplyBounds()
              ) -> tuple[dict, list[TrainedClient], list[DroppedClient]]:
    """Hook 4: (layer-wise average, trained infos, dropped infos); each tensor is averaged over its senders, each
    sender weighted as `weights` says (its weight is in its TrainedClient); a reply that fails a check (usable_upload)
    is dropped with its reason, never averaged. The server optimizer comes after."""
    updates, trained, dropped = usable_updates(plan, global_state, replies, transposed, weights, bounds)
    return layerwise_weighted_mean(global_state, updates), trained, dropped


def usable_updates(plan: Plan, global_state: dict, replies: list[Reply], transposed: frozenset[str], weights: str,
                   bounds: ReplyBounds = ReplyBounds()):
    """([(upload in global tensors, weight)], trained infos, dropped infos), in client order."""
    updates, trained, dropped = [], [], []
    for reply in sorted(replies, key=lambda r: r.client):  # client order: both engines sum alike
        try:
            plan_class = plan.by_name(reply.class_name).at_rung(int(reply.metrics.get("rung", 0)))
        except PlanError as exc:
            dropped.append(DroppedClient(reply.client, reply.class_name, str(exc)))
            continue
        upload, problem = usable_upload(reply, plan_class, global_state, transposed, bounds)
        problem = problem or samples_out_of_bounds(reply, bounds)
        if problem is None:
            try:
                weight = reply_weight(reply, weights)
            except AggregationError as exc:
                problem = str(exc)
        if problem is not None:
            dropped.append(DroppedClient(reply.client, reply.class_name, problem))
            continue
        updates.append((upload, weight))
        trained.append(TrainedClient.from_dict({"client": reply.client, "class": reply.class_name,
                                                "num_examples": reply.num_examples, **reply.metrics,
                                                "weight": weight}))
    return updates, trained, dropped


def aggregate_and_step(setup: PreparedRun, state: RunState, replies: list[Reply]):
    """Hook 4 with the server optimizer: (new global state, its optimizer state, trained infos, dropped infos)."""
    config = setup.config
    updates, trained, dropped = usable_updates(setup.plan, state.global_state, replies, lora_transposed(setup.template),
                                               config.aggregation_weights, reply_bounds(setup))
    average = layerwise_weighted_mean(state.global_state, updates)
    new_state, server_state = server_step(server_optimizer_of(config), state.global_state, average,
                                          trained_keys(updates), state.server_state)
    return new_state, server_state, trained, dropped


def reply_bounds(setup: PreparedRun) -> ReplyBounds:
    """The run's bounds on replies: each client's partition size, and --max-update-norm."""
    sizes = {client: len(indices) for client, indices in enumerate(setup.parts.clients)}
    train = setup.config.train
    return ReplyBounds(sizes, setup.config.max_update_norm, train.local_steps * train.batch_size)


def round_flops(setup: PreparedRun, trained: list[TrainedClient], measurements: Mapping[str, Measurement],
                predicted: bool) -> int | None:
    """Training FLOPs of the round: per-step FLOPs of each trained client's class x local steps."""
    total = 0
    for info in trained:
        if predicted:
            costs = setup.plan.by_name(info.class_name).at_rung(info.rung or 0).predicted
            per_step = None if costs is None else costs.flops_per_step
        else:
            m = measurements.get(info.measurement_key)
            per_step = None if m is None else m.flops_per_step
        if per_step is None:
            return None
        total += per_step * setup.config.train.local_steps
    return int(total)


@dataclass(frozen=True)
class RoundOutcome:
    """What the hooks of one round produced, before its record: the new global state and each client's fate."""

    sampled: list[int]
    global_state: dict
    trained: list[TrainedClient]
    dropped: list[DroppedClient]
    started_s: float  # perf_counter at the round's start


def record(setup: PreparedRun, state: RunState, round_index: int, outcome: RoundOutcome, engine: str) -> RoundRecord:
    """Hook 5: evaluate the new global model and describe the round (one line of rounds.jsonl)."""
    client_mod.load_global(setup.template, outcome.global_state)
    scores = client_mod.evaluate(setup.template, setup.dataset.test)  # accuracy and loss, measured
    trained = outcome.trained
    return RoundRecord(round=round_index, sampled=tuple(outcome.sampled), trained=tuple(trained),
                       dropped=tuple(sorted(outcome.dropped, key=lambda d: d.client)), **scores,
                       upload_bytes=int(sum(t.upload_bytes or 0 for t in trained)),
                       flops_planned=round_flops(setup, trained, state.measurements, predicted=True),
                       flops_measured=round_flops(setup, trained, state.measurements, predicted=False),
                       seconds=time.perf_counter() - outcome.started_s, engine=engine)


def run_round(setup: PreparedRun, state: RunState, round_index: int, trainer: Trainer, on_event: Event) -> RunState:
    """One round through the five hooks; returns the state after it."""
    started = time.perf_counter()
    class_of = trainer.available(setup, round_index)
    sampled = sample(setup, round_index, class_of)
    on_event("round_start", {"round": round_index, "clients": len(sampled)})
    jobs, dropped = configure(setup, state, round_index, sampled, class_of, getattr(trainer, "measures_on_node", False))
    for info in dropped:
        on_event("client_done", {"round": round_index, "client": info.client})
    replies = trainer.train(setup, state.global_state, round_index, jobs,
                            lambda client: on_event("client_done", {"round": round_index, "client": client}))
    new_state, server_state, trained, rejected = aggregate_and_step(setup, state, replies)
    if setup.config.measure and state.measurements:
        measure_rungs(setup, state, round_index, trained)
    outcome = RoundOutcome(sampled, new_state, trained, dropped + rejected, started)
    entry = record(setup, state, round_index, outcome, trainer.name)
    on_event("round_end", entry)
    return RunState(round_index, new_state, (*state.history, entry), state.measurements, server_state,
                    kept_client_states(state.client_states, replies, trained))


def kept_client_states(before: dict, replies: list[Reply], trained: list[TrainedClient]) -> dict:
    """Client optimizer states after a round: those of clients whose update was averaged replace their old ones."""
    used = {t.client for t in trained}
    return {**before, **{r.client: r.optimizer_state for r in replies
                         if r.client in used and r.optimizer_state is not None}}


def measure_rungs(setup: PreparedRun, state: RunState, round_index: int, trained: list[TrainedClient]) -> None:
    """The first-step measurement of each fallback rung the first time a client trains it (on that client's data,
    from the round's starting weights), into state.measurements under its measurement_key."""
    for info in trained:
        key = info.measurement_key
        if key in state.measurements:
            continue
        plan_class = setup.plan.by_name(info.class_name).at_rung(info.rung or 0)
        data = setup.dataset.train.subset(setup.parts.clients[info.client])
        state.measurements[key] = measure_class(setup.template, state.global_state, plan_class, data,
                                                setup.plan.context.batch_size, setup.config.train.optimizer,
                                                setup.config.train.lr, client_seed(setup.config.seed, round_index,
                                                                                   info.client))


def run_rounds(setup: PreparedRun, state: RunState, trainer: Trainer, on_event: Event,
               save: Callable[[RunState], None] | None = None) -> RunState:
    """The fixed loop: rounds state.round + 1 .. config.rounds, each saved (checkpoint) when it ends."""
    for round_index in range(state.round + 1, setup.config.rounds + 1):
        state = run_round(setup, state, round_index, trainer, on_event)
        if save is not None:
            save(state)
    return state


class EmbeddedTrainer:
    """The train hook of the embedded engine: every job trained in this process, one after another."""

    name = "embedded"

    def available(self, setup: PreparedRun, round_index: int) -> dict[int, str]:
        return dict(enumerate(setup.class_of))

    def train(self, setup: PreparedRun, global_state: dict, round_index: int, jobs: list[Job], done) -> list[Reply]:
        replies = []
        for job in jobs:
            replies.append(train_job(setup, global_state, job))
            done(job.client)
        return replies


def train_job(setup: PreparedRun, global_state: dict, job: Job) -> Reply:
    """Train one job on its client's data; a failing client gives a Reply with its one-line reason."""
    data = setup.dataset.train.subset(setup.parts.clients[job.client])
    try:
        keep = setup.config.client_optimizer_state == "keep"
        result = client_mod.train_client(setup.template, global_state, job.trains, data, job.settings, job.seed,
                                         (job.optimizer_state or {}) if keep else None)
    except (client_mod.ClientDropped, RuntimeError, ValueError, MemoryError) as exc:
        reason = first_line(exc)
        return Reply(job.client, job.plan_class.name, problem=reason)
    return Reply(job.client, job.plan_class.name, result.upload, result.num_examples,
                 {**result.metrics, "rung": job.rung}, optimizer_state=result.optimizer_state)
