"""The train hook of execute/loop.py on a Flower grid: plan slices out, uploads back, over the Message API.

Flower's server sees only node ids, so before each round the trainer brings its roster of nodes up to date
(identify.py: new nodes are asked their device class, partition id and model fingerprint; refused, dead,
returning and replacing nodes are each logged in one line). The loop samples among the roster's live
nodes, configures and aggregates as in the embedded engine; this trainer sends each sampled node the global
model and its own class's plan slice, and turns the replies into `Reply` values. Replies are matched to
nodes by the message they answer: the SuperLink answers for a dead node itself, from its own node id.
"""

from __future__ import annotations

from collections.abc import Mapping
from logging import INFO

from flwr.app import Message, MessageType, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log

from budgetplan.execute.loop import Job, PreparedRun, Reply, key_mismatch
from budgetplan.integrations.flower import records as rec
from budgetplan.integrations.flower.registry import Registration
from budgetplan.integrations.flower.identify import (PREFIX, NodeIdentity, NodeRoster, identify_nodes,
                                                    replied_node, reply_problem, send_and_receive, warn)
from budgetplan.errors import PlanError
from budgetplan.plan import Plan


class FlowerTrainer:
    """Trains the loop's jobs on the nodes of `grid`; who is who lives in `roster` (identify.py)."""

    name = "flower"
    measures_on_node = True  # each node measures its own free memory and picks its rung (execute/ladder.py)

    def __init__(self, grid: Grid, plan: Plan, *, min_nodes: int, reply_timeout_s: float = 3600.0,
                 node_wait_s: float = 0.0, base_state: dict | None = None,
                 registry: Mapping[bytes, Registration] | None = None) -> None:
        """base_state: the run's initial global state, which every node builds itself; when given, a training
        message carries only the tensors that differ from it (and its digest), else the whole global state."""
        self.grid = grid
        self.base = base_state
        self.base_digest = rec.state_digest(base_state) if base_state is not None else None
        self.plan = plan
        self.min_nodes = min_nodes  # nodes to wait for before round 1 (all of them in simulation)
        self.reply_timeout_s = reply_timeout_s
        self.node_wait_s = node_wait_s  # before later rounds: how long to wait for dead nodes to come back
        self.roster = NodeRoster.for_plan(plan, registry)  # registry: keys -> what they may claim
        self._identified = False

    @property
    def nodes(self) -> dict[int, NodeIdentity]:
        return self.roster.nodes

    def available(self, setup: PreparedRun, round_index: int) -> dict[int, str]:
        """Client -> device class of every live accepted node (new and returning nodes are asked first)."""
        first, self._identified = not self._identified, True
        identify_nodes(self.roster, self.grid, self.min_nodes,
                       self.reply_timeout_s if first else self.node_wait_s, self.reply_timeout_s, first)
        return {n.client: n.device_class for n in self.nodes.values()}

    def train(self, setup: PreparedRun, global_state: dict, round_index: int, jobs: list[Job], done) -> list[Reply]:
        by_client = {n.client: n for n in self.nodes.values()}
        arrays = rec.to_arrays(global_state if self.base is None else rec.changed_since(global_state, self.base))
        messages, pending = [], {}
        for job in jobs:
            node = by_client[job.client]
            config = rec.slice_config(self.plan, job.plan_class, round_index)
            if self.base_digest is not None:
                config[rec.BASE_DIGEST] = self.base_digest
            content = RecordDict({rec.ARRAYS: arrays, rec.CONFIG: config})
            messages.append(Message(content=content, dst_node_id=node.node_id, message_type=MessageType.TRAIN))
            pending[node.node_id] = node
        log(INFO, "%s round %d: %d of %d nodes sent a plan slice", PREFIX, round_index, len(messages),
            len(self.nodes))
        replies = send_and_receive(self.grid, messages, self.reply_timeout_s) if messages else []
        sent = {m.metadata.message_id: m.metadata.dst_node_id for m in messages if m.metadata.message_id}
        out = []
        for message in replies:
            node_id = replied_node(message, sent)
            node = pending.pop(node_id, None)
            if node is None:
                warn(f"reply about node {node_id}, which was not asked to train this round; ignored")
                continue
            out.append(self.reply_of(message, node))
            done(node.client)
        for node in pending.values():  # still connected as far as the SuperLink knows: slow, not dead
            out.append(self._problem(node, f"no reply within the round's {self.reply_timeout_s:g} s"))
            done(node.client)
        return out

    def reply_of(self, message: Message, node: NodeIdentity) -> Reply:
        """The node's Reply; a problem (one line, also logged) when the reply cannot be used."""
        error = reply_problem(message)
        if error is not None:
            reason, gone = error
            if gone:  # the SuperLink says the node is gone: out of the sample until it is back
                self.roster.mark_dead(node.node_id, reason)
                return Reply(node.client, node.device_class, problem=reason)
            return self._problem(node, reason)
        content = message.content
        if rec.ARRAYS not in content.array_records or rec.METRICS not in content.metric_records:
            return self._problem(node, f"reply lacks the '{rec.ARRAYS}' arrays or '{rec.METRICS}' metrics record")
        metrics = dict(content.metric_records[rec.METRICS])
        count = metrics.pop(rec.NUM_EXAMPLES, None)
        if not isinstance(count, int) or count < 0:
            return self._problem(node, f"reply has no valid '{rec.NUM_EXAMPLES}' metric (got {count!r})")
        arrays = content.array_records[rec.ARRAYS]
        try:  # the node trained the rung of its class's ladder that fit what it had free
            trained = self.plan.by_name(node.device_class).at_rung(int(metrics.get("rung", 0)))
        except PlanError as exc:
            return self._problem(node, str(exc))
        mismatch = key_mismatch(set(arrays.keys()), set(trained.trainable_names))
        if mismatch:
            return self._problem(node, mismatch)
        return Reply(node.client, node.device_class, rec.to_state(arrays), count, metrics)

    @staticmethod
    def _problem(node: NodeIdentity, problem: str) -> Reply:
        warn(f"node {node.node_id} (client {node.client}, class {node.device_class}): {problem}; "
             "the round continues without it")
        return Reply(node.client, node.device_class, problem=problem)
