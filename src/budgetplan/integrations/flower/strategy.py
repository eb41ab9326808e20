"""A Flower Message-API strategy that runs a budgetplan plan: per-node plan slices, layer-wise averaging.

Flower's server sees only node ids, so before a node is first sampled the strategy asks it who it is (a
query message answered by budgetplan's ClientApp: device class, partition id, model fingerprint). Nodes
that cannot run the plan are logged once, in one line, and left out. Each round it samples clients the way
the embedded executor does, sends each one the global model and its own class's plan slice, checks every
reply's keys against that class's upload keys, and averages each tensor over the replies that contain it
with the embedded executor's `layerwise_weighted_mean` (stock FedAvg refuses replies with differing keys).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from logging import INFO

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MessageType, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.supercore import log

from budgetplan.execute.aggregate import AggregationError, expand_lora_upload, layerwise_weighted_mean
from budgetplan.execute.plans import RunPlan
from budgetplan.integrations.flower import records as rec
from budgetplan.integrations.flower.identify import PREFIX, NodeIdentity, identify_nodes, warn

SAMPLE_STREAM = 7  # the embedded executor's sampling stream: default_rng([seed, round, 7])


@dataclass
class RoundLog:
    """What happened to each sampled client in one round, in the embedded executor's record format."""

    sampled: list[int] = field(default_factory=list)
    trained: list[dict] = field(default_factory=list)
    dropped: list[dict] = field(default_factory=list)
    started_s: float = field(default_factory=time.perf_counter)


class LayerwiseStrategy(Strategy):
    """Runs `plan` on Flower; round r of this strategy is round `round_offset + r` of the run."""

    def __init__(self, plan: RunPlan, *, clients_per_round: int, seed: int = 0,
                 transposed: frozenset[str] = frozenset(), blocked_classes: Mapping[str, str] | None = None,
                 round_offset: int = 0, reply_timeout_s: float = 3600.0, min_nodes: int | None = None,
                 on_round_start: Callable[[int, int], None] | None = None) -> None:
        self.plan = plan
        self.clients_per_round = clients_per_round
        self.seed = seed
        self.transposed = transposed  # weights stored (in, out), whose LoRA delta is transposed (GPT-2)
        self.blocked_classes = dict(blocked_classes or {})  # class -> why its devices cannot run it
        self.round_offset = round_offset
        self.reply_timeout_s = reply_timeout_s
        # Nodes to wait for before round 1; all of them in simulation, so sampling sees every client.
        self.min_nodes = clients_per_round if min_nodes is None else min_nodes
        self.on_round_start = on_round_start  # (round, clients sampled): progress reporting
        self.nodes: dict[int, NodeIdentity] = {}  # accepted nodes by node id
        self.rejected: dict[int, str] = {}  # node id -> reason, each logged once
        self.rounds: dict[int, RoundLog] = {}
        self._global: dict = {}
        self._pending: dict[int, NodeIdentity] = {}

    def summary(self) -> None:
        classes = ", ".join(f"{c.name}={'/'.join(sorted(set(c.block_states)))}" for c in self.plan.classes)
        log(INFO, "\t├──> budgetplan plan '%s' for %s (%s)", self.plan.label, self.plan.model, self.plan.fingerprint)
        log(INFO, "\t└──> classes: %s; %d clients per round, seed %d", classes, self.clients_per_round, self.seed)

    # ---- training -------------------------------------------------------------------------------------

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> Iterable[Message]:
        round_index = self.round_offset + server_round
        identify_nodes(self, grid)
        self._global = rec.to_state(arrays)
        by_client = {n.client: n for n in self.nodes.values()}
        chosen = self.sample(round_index)
        self.rounds[round_index] = round_log = RoundLog(sampled=chosen)
        self._pending = {}
        messages = []
        for client in chosen:
            node = by_client[client]
            if node.device_class in self.blocked_classes:
                round_log.dropped.append(_dropped(node, self.blocked_classes[node.device_class]))
                continue
            slice_record = rec.slice_config(self.plan.by_name(node.device_class), self.plan.fingerprint,
                                            round_index)
            for key, value in config.items():
                slice_record.setdefault(key, value)
            content = RecordDict({rec.ARRAYS: arrays, rec.CONFIG: slice_record})
            messages.append(Message(content=content, dst_node_id=node.node_id, message_type=MessageType.TRAIN))
            self._pending[node.node_id] = node
        log(INFO, "%s round %d: %d of %d nodes sampled, %d sent a plan slice", PREFIX, round_index, len(chosen),
            len(self.nodes), len(messages))
        if self.on_round_start is not None:
            self.on_round_start(round_index, len(chosen))
        return messages

    def sample(self, round_index: int) -> list[int]:
        """The embedded executor's draw: the same seed and the same eligible clients give the same sample."""
        eligible = sorted(n.client for n in self.nodes.values() if self.plan.by_name(n.device_class).active)
        count = min(self.clients_per_round, len(eligible))
        if not count:
            return []
        rng = np.random.default_rng([self.seed, round_index, SAMPLE_STREAM])
        return sorted(int(c) for c in rng.choice(eligible, size=count, replace=False))

    def aggregate_train(self, server_round: int,
                        replies: Iterable[Message]) -> tuple[ArrayRecord | None, MetricRecord | None]:
        round_log = self.rounds[self.round_offset + server_round]
        accepted = []
        for reply in replies:
            update = self._accept(reply, round_log)
            if update is not None:
                accepted.append(update)
        for node in self._pending.values():
            round_log.dropped.append(_dropped(node, "no reply before the round's timeout"))
            warn(f"node {node.node_id} (client {node.client}, class {node.device_class}) did not reply in time; "
                 "the round continues without it")
        self._pending = {}
        accepted.sort(key=lambda item: item[0])  # client order, as the embedded executor sums them
        if not accepted:
            warn(f"round {self.round_offset + server_round}: no usable replies; the global model is unchanged")
            return None, None
        new_state = layerwise_weighted_mean(self._global, [(upload, n) for _, upload, n in accepted])
        return rec.to_arrays(new_state), _mean_metrics(round_log.trained)

    def _accept(self, reply: Message, round_log: RoundLog):
        """(client, expanded upload, num_examples) of a usable reply; None (logged, recorded) otherwise."""
        node = self._pending.pop(reply.metadata.src_node_id, None)
        if node is None:
            warn(f"reply from node {reply.metadata.src_node_id}, which was not asked to train this round; ignored")
            return None
        problem, upload, count, metrics = self._check_reply(reply, node)
        if problem is not None:
            round_log.dropped.append(_dropped(node, problem))
            warn(f"node {node.node_id} (client {node.client}, class {node.device_class}): {problem}; "
                 "the round continues without it")
            return None
        round_log.trained.append({"client": node.client, "class": node.device_class, "num_examples": count,
                                  **metrics})
        return node.client, upload, count

    def _check_reply(self, reply: Message, node: NodeIdentity):
        if reply.has_error():
            return f"dropped ({_first_line(reply.error.reason)})", None, 0, {}
        content = reply.content
        if rec.ARRAYS not in content.array_records or rec.METRICS not in content.metric_records:
            return f"reply lacks the '{rec.ARRAYS}' arrays or '{rec.METRICS}' metrics record", None, 0, {}
        metrics = dict(content.metric_records[rec.METRICS])
        count = metrics.pop(rec.NUM_EXAMPLES, None)
        if not isinstance(count, int) or count < 0:
            return f"reply has no valid '{rec.NUM_EXAMPLES}' metric (got {count!r})", None, 0, {}
        arrays = content.array_records[rec.ARRAYS]
        class_plan = self.plan.by_name(node.device_class)
        mismatch = key_mismatch(set(arrays.keys()), set(class_plan.upload_keys))
        if mismatch:
            return mismatch, None, 0, {}
        try:
            upload = expand_lora_upload(rec.to_state(arrays), self._global, class_plan.lora_alpha_per_rank,
                                        self.transposed)
            _check_shapes(upload, self._global)
        except AggregationError as exc:
            return str(exc), None, 0, {}
        return None, upload, count, metrics

    # ---- evaluation happens on the server (evaluate_fn), as in the embedded executor ---------------------

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> Iterable[Message]:
        return []

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return None


def key_mismatch(sent: set[str], planned: set[str]) -> str | None:
    """A one-line description of how a reply's tensor names differ from the plan's upload keys, or None."""
    if sent == planned:
        return None
    unexpected, missing = sorted(sent - planned), sorted(planned - sent)
    parts = []
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:2])})")
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:2])})")
    return ("reply keys differ from the plan's upload keys: " + "; ".join(parts)
            + "; the node trained another configuration or model, reply rejected")


def _check_shapes(upload: Mapping, global_state: Mapping) -> None:
    for key, tensor in upload.items():
        if key not in global_state:
            raise AggregationError(f"'{key}' is not a tensor of the global model; the node ran another model")
        if tuple(tensor.shape) != tuple(global_state[key].shape):
            raise AggregationError(f"'{key}' has shape {tuple(tensor.shape)}, the global model has "
                                   f"{tuple(global_state[key].shape)}; the node ran another model")


def _dropped(node: NodeIdentity, reason: str) -> dict:
    return {"client": node.client, "class": node.device_class, "reason": reason}


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0][:300] if lines else "no reason given"


def _mean_metrics(trained: list[dict]) -> MetricRecord:
    """Example-weighted mean of each numeric client metric (loss_last, seconds, ...)."""
    total = sum(t["num_examples"] for t in trained) or 1
    keys = {k for t in trained for k, v in t.items() if isinstance(v, (int, float)) and k not in ("client",)}
    keys.discard("num_examples")
    return MetricRecord({k: float(sum(t.get(k, 0.0) * t["num_examples"] for t in trained) / total)
                         for k in sorted(keys)})

