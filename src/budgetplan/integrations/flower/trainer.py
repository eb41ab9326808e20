"""The train hook of execute/loop.py on a Flower grid: plan slices out, uploads back, over the Message API.

Flower's server sees only node ids, so before a node is first sampled the trainer asks it who it is
(identify.py: device class, partition id, model fingerprint); nodes that cannot run the plan are logged
once, in one line, and left out. Each round the loop samples, configures and aggregates as in the embedded
engine; this trainer sends each sampled node the global model and its own class's plan slice, and turns the
replies into `Reply` values (an error reply, a malformed one or one with other tensor names: a one-line
problem, logged, and the round goes on without it).
"""

from __future__ import annotations

from logging import INFO

from flwr.app import Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log

from budgetplan.execute.loop import Job, Reply, key_mismatch
from budgetplan.integrations.flower import records as rec
from budgetplan.integrations.flower.identify import PREFIX, NodeIdentity, identify_nodes, warn
from budgetplan.plan import Plan


class FlowerTrainer:
    """Trains the loop's jobs on the nodes of `grid`; `nodes` / `rejected` are filled by identify_nodes."""

    name = "flower"

    def __init__(self, grid: Grid, plan: Plan, *, min_nodes: int, reply_timeout_s: float = 3600.0) -> None:
        self.grid = grid
        self.plan = plan
        self.min_nodes = min_nodes  # nodes to wait for before round 1 (all of them in simulation)
        self.reply_timeout_s = reply_timeout_s
        self.nodes: dict[int, NodeIdentity] = {}  # accepted nodes by node id
        self.rejected: dict[int, str] = {}  # node id -> reason, each logged once

    def available(self, setup, round_index: int) -> dict[int, str]:
        """Client -> device class of every identified node (new nodes are asked first)."""
        identify_nodes(self, self.grid)
        return {n.client: n.device_class for n in self.nodes.values()}

    def train(self, setup, global_state: dict, round_index: int, jobs: list[Job], done) -> list[Reply]:
        by_client = {n.client: n for n in self.nodes.values()}
        arrays = rec.to_arrays(global_state)
        messages, pending = [], {}
        for job in jobs:
            node = by_client[job.client]
            config = rec.slice_config(self.plan, job.plan_class, round_index)
            content = RecordDict({rec.ARRAYS: arrays, rec.CONFIG: config})
            messages.append(Message(content=content, dst_node_id=node.node_id, message_type=MessageType.TRAIN))
            pending[node.node_id] = node
        log(INFO, "%s round %d: %d of %d nodes sent a plan slice", PREFIX, round_index, len(messages),
            len(self.nodes))
        replies = list(self.grid.send_and_receive(messages, timeout=self.reply_timeout_s)) if messages else []
        out = []
        for message in replies:
            node = pending.pop(message.metadata.src_node_id, None)
            if node is None:
                warn(f"reply from node {message.metadata.src_node_id}, which was not asked to train this round; "
                     "ignored")
                continue
            out.append(self.reply_of(message, node))
            done(node.client)
        for node in pending.values():
            out.append(self._problem(node, "no reply before the round's timeout"))
            done(node.client)
        return out

    def reply_of(self, message: Message, node: NodeIdentity) -> Reply:
        """The node's Reply; a problem (one line, also logged) when the reply cannot be used."""
        if message.has_error():
            return self._problem(node, f"dropped ({_first_line(message.error.reason)})")
        content = message.content
        if rec.ARRAYS not in content.array_records or rec.METRICS not in content.metric_records:
            return self._problem(node, f"reply lacks the '{rec.ARRAYS}' arrays or '{rec.METRICS}' metrics record")
        metrics = dict(content.metric_records[rec.METRICS])
        count = metrics.pop(rec.NUM_EXAMPLES, None)
        if not isinstance(count, int) or count < 0:
            return self._problem(node, f"reply has no valid '{rec.NUM_EXAMPLES}' metric (got {count!r})")
        arrays = content.array_records[rec.ARRAYS]
        mismatch = key_mismatch(set(arrays.keys()), set(self.plan.by_name(node.device_class).trainable_names))
        if mismatch:
            return self._problem(node, mismatch)
        return Reply(node.client, node.device_class, rec.to_state(arrays), count, metrics)

    @staticmethod
    def _problem(node: NodeIdentity, problem: str) -> Reply:
        warn(f"node {node.node_id} (client {node.client}, class {node.device_class}): {problem}; "
             "the round continues without it")
        return Reply(node.client, node.device_class, problem=problem)


def _first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0][:300] if lines else "no reason given"
