"""Server side of node identity: which Flower node is which client, and what happens when nodes come and go.

Flower's Grid exposes node ids only; a node's class lives in its own Context.node_config. Each new node is
asked who it is (device class, partition id, model fingerprint). The roster then keeps, per node id:

- accepted: alive, sampled by its partition id (the client index);
- refused: no class, a class the plan lacks, another model, no answer, or (when the app's node files register
  keys, registry.py) a key no node file holds or a partition and class its key is not registered for: one log
  line, never sampled;
- dead: it was accepted, then the SuperLink reported it unavailable for a round's message, or it left the
  federation. It is not sampled until it is back: a node id that reappears after it
  was gone is asked again, and a new node with the same partition id replaces it;
- waiting: a second node with a partition id an alive node holds; it takes over if the holder dies.

Replies are matched to nodes by the id of the message they answer, not by their source: the SuperLink's
own error replies (node unavailable, reply expired) come from the SuperLink's node id, not the dead node's.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from logging import WARNING

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid
from flwr.supercore import log

from budgetplan.errors import first_line
from budgetplan.integrations.flower import records as rec
from budgetplan.integrations.flower.registry import Registration, registration_problem

PREFIX = "budgetplan:"
NO_REASON = "no reason given"  # what an Error reply without a reason is reported as
# Error codes the SuperLink itself sends for a message: the node is gone, or the message or reply expired.
GONE_CODES = frozenset({ErrorCode.NODE_UNAVAILABLE, ErrorCode.MESSAGE_UNAVAILABLE,
                        ErrorCode.REPLY_MESSAGE_UNAVAILABLE})
POLL_S = 0.25  # between pulls for replies (each pull is one request to the SuperLink)


@dataclass(frozen=True)
class NodeIdentity:
    node_id: int
    device_class: str
    client: int  # partition id in simulation, else the node id: the key clients are sampled and sorted by


def warn(message: str) -> None:
    """One line in the server log (Flower's logger), prefixed so operators can grep for it."""
    log(WARNING, "%s %s", PREFIX, " ".join(message.split("\n")))


def send_and_receive(grid: Grid, messages: list[Message], timeout_s: float, poll_s: float = POLL_S) -> list[Message]:
    """grid.send_and_receive, polling for replies every poll_s: Flower's own waits 3 s between polls, which
    a round pays at every step (identity query, training) even when every node has answered."""
    pending = set(grid.push_messages(messages))
    deadline = time.monotonic() + timeout_s
    replies: list[Message] = []
    while pending:
        got = list(grid.pull_messages(pending))
        replies += got
        pending -= {m.metadata.reply_to_message_id for m in got}
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(poll_s)
    return replies


def replied_node(reply: Message, sent: Mapping[str, int]) -> int:
    """The node a reply is about: the destination of the message it answers (sent: message id -> node id)."""
    return sent.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)


def reply_problem(reply: Message) -> tuple[str, bool] | None:
    """(one-line reason, whether the node is gone) for an error reply; None for a normal reply."""
    if not reply.has_error():
        return None
    code = reply.error.code
    gone = code in GONE_CODES
    kind = "unavailable (reported by the SuperLink)" if gone else "dropped"
    return f"{kind}: {first_line(reply.error.reason, 300, NO_REASON)}", gone


@dataclass
class NodeRoster:
    """Who is who among the grid's nodes, for one plan (its class names, model and fingerprint)."""

    class_names: tuple[str, ...]
    model: str
    fingerprint: str
    nodes: dict[int, NodeIdentity] = field(default_factory=dict)  # accepted and alive, by node id
    rejected: dict[int, str] = field(default_factory=dict)  # node id -> why it can never run the plan
    dead: dict[int, NodeIdentity] = field(default_factory=dict)
    dead_why: dict[int, str] = field(default_factory=dict)
    left: set[int] = field(default_factory=set)  # dead nodes seen absent from the grid since they died
    waiting: dict[int, NodeIdentity] = field(default_factory=dict)  # duplicates of an alive node's partition
    registry: Mapping[bytes, Registration] = field(default_factory=dict)  # PEM key -> what it may claim
    keys: dict[int, bytes] = field(default_factory=dict)  # node id -> the key the SuperLink authenticated it with
    activated: dict[int, str] = field(default_factory=dict)  # node id -> its last activation the SuperLink reported

    @classmethod
    def for_plan(cls, plan, registry: Mapping[bytes, Registration] | None = None) -> "NodeRoster":
        return cls(tuple(c.name for c in plan.classes), str(plan.model.load_spec), str(plan.model.fingerprint),
                   registry=dict(registry or {}))

    def answered(self) -> int:
        """How many nodes said who they are (accepted, refused or waiting)."""
        return len(self.nodes) + len(self.rejected) + len(self.waiting)

    def missing(self) -> set[int]:
        """Partitions whose node died and that no live node holds yet."""
        return {n.client for n in self.dead.values()} - set(self.by_client())

    def by_client(self) -> dict[int, NodeIdentity]:
        return {n.client: n for n in self.nodes.values()}

    def sync(self, present: Iterable[int], activated: Mapping[int, str] | None = None) -> list[int]:
        """Record who left the grid; the node ids to ask who they are (new ones, and dead ones back again: seen
        absent since they died, or activated again since: an authenticated node restarted with its key keeps
        its node id, and may be back before the SuperLink noticed it was gone)."""
        activated = dict(activated or {})
        for node_id, stamp in activated.items():
            if stamp and node_id in self.dead and stamp != self.activated.get(node_id, stamp):
                self.left.add(node_id)  # activated again since it died: it went and came back
        self.activated.update({n: stamp for n, stamp in activated.items() if stamp})
        present = set(present)
        for node_id in [n for n in self.nodes if n not in present]:
            self.mark_dead(node_id, "left the federation")
        self.left |= {n for n in self.dead if n not in present}
        for node_id in [n for n in self.waiting if n not in present]:
            del self.waiting[node_id]
        known = set(self.nodes) | set(self.rejected) | set(self.waiting) | set(self.dead)
        back = [n for n in self.dead if n in self.left and n in present]
        return sorted([n for n in present if n not in known] + back)

    def mark_dead(self, node_id: int, reason: str) -> None:
        """An accepted node failed: not sampled until it is back; a node waiting for its partition takes over."""
        node = self.nodes.pop(node_id, None)
        if node is None:
            return
        self.dead[node_id], self.dead_why[node_id] = node, reason
        self.left.discard(node_id)
        warn(f"node {node_id} (client {node.client}, class {node.device_class}) is out: {reason}; it is not "
             "sampled until it is back or a node with the same partition-id replaces it")
        heir = next((w for w in self.waiting.values() if w.client == node.client), None)
        if heir is not None:
            del self.waiting[heir.node_id]
            self._accept(heir)

    def admit(self, node_id: int, reply: Message | None) -> None:
        """Judge a node's answer to the identity query (None: no answer in time) and record the verdict."""
        if reply is None:
            warn(f"node {node_id} did not answer the identity query in time; it is asked again next round")
            return
        identity, problem = judge(node_id, reply, self)
        if problem is not None:
            self.rejected[node_id] = problem
            self.dead.pop(node_id, None)
            warn(f"node {node_id}: {problem}; node skipped, the run continues without it")
            return
        holder = self.by_client().get(identity.client)
        if holder is not None and holder.node_id != node_id:
            self.waiting[node_id] = identity
            warn(f"node {node_id}: client {identity.client} is already node {holder.node_id}; it waits and takes "
                 "over if that node dies (give each node its own partition-id)")
            return
        self._accept(identity)

    def _accept(self, identity: NodeIdentity) -> None:
        if self.dead.pop(identity.node_id, None) is not None:
            warn(f"node {identity.node_id} (client {identity.client}, class {identity.device_class}) is back "
                 f"(out: {self.dead_why.pop(identity.node_id, 'dead')})")
        self.left.discard(identity.node_id)
        replaced = [n for n, old in self.dead.items() if old.client == identity.client]
        for node_id in replaced:
            warn(f"node {identity.node_id} (client {identity.client}, class {identity.device_class}) replaces "
                 f"node {node_id} (out: {self.dead_why.get(node_id, 'dead')})")
            del self.dead[node_id]
            self.dead_why.pop(node_id, None)
        self.nodes[identity.node_id] = identity


def judge(node_id: int, reply: Message, roster: NodeRoster) -> tuple[NodeIdentity | None, str | None]:
    """The node's identity, or why it cannot run this plan (one line: what is wrong and what to do)."""
    if reply.has_error():
        return None, f"could not say who it is ({first_line(reply.error.reason, 300, NO_REASON)})"
    if rec.IDENTITY not in reply.content.config_records:
        return None, "answered without budgetplan's identity record; run budgetplan's ClientApp on it"
    answer = reply.content.config_records[rec.IDENTITY]
    device_class = str(answer.get(rec.DEVICE_CLASS, ""))
    classes = ", ".join(roster.class_names)
    if not device_class:
        return None, (f"has no device class; start its SuperNode with --node-config "
                      f"'{rec.DEVICE_CLASS}=\"<one of: {classes}>\"' (or the app's nodes/node-<i>.toml)")
    if device_class not in roster.class_names:
        return None, (f"device class {device_class!r} is not in the plan (classes: {classes}); give the node one "
                      "of these classes or solve a plan that includes it")
    fingerprint = str(answer.get(rec.MODEL_FINGERPRINT, ""))
    if fingerprint != roster.fingerprint:
        return None, (f"class {device_class} runs model {fingerprint or '(unknown)'} but the plan is for "
                      f"{roster.model} ({roster.fingerprint}); load the plan's model on the node or solve a plan "
                      "for the node's model")
    partition = int(answer.get(rec.PARTITION_ID, rec.NO_PARTITION))
    problem = registration_problem(roster.keys.get(node_id), partition, device_class, roster.registry)
    if problem is not None:
        return None, problem
    return NodeIdentity(node_id, device_class, partition if partition != rec.NO_PARTITION else node_id), None


def ask(grid: Grid, roster: NodeRoster, node_ids: list[int], timeout_s: float) -> None:
    """Send the identity query to node_ids and admit each answer (a silent node is asked again later)."""
    if not node_ids:
        return
    if roster.registry:  # the key each node authenticated with, from the SuperLink (not from the node)
        roster.keys.update({int(info.node_id): bytes(info.public_key) for info in grid.get_nodes()})
    question = RecordDict({rec.CONFIG: ConfigRecord({rec.MODEL_FINGERPRINT: roster.fingerprint})})
    messages = [Message(content=question, dst_node_id=n, message_type=rec.IDENTIFY_MESSAGE) for n in node_ids]
    replies = send_and_receive(grid, messages, timeout_s)
    sent = {m.metadata.message_id: m.metadata.dst_node_id for m in messages if m.metadata.message_id}
    answers = {}
    for reply in replies:
        answers.setdefault(replied_node(reply, sent), reply)
    for node_id in node_ids:
        roster.admit(node_id, answers.get(node_id))


def identify_nodes(roster: NodeRoster, grid: Grid, expected: int, wait_s: float, timeout_s: float,
                   first: bool) -> None:
    """Before a round: identify new and returning nodes. Before the first round wait up to wait_s until
    `expected` nodes have answered; before later ones, until every dead node's partition is held again."""
    deadline = time.monotonic() + wait_s
    asked: set[int] = set()
    while True:
        infos = list(grid.get_nodes())  # ids and, on a SuperLink, each node's last activation
        unseen = [n for n in roster.sync([int(i.node_id) for i in infos],
                                         {int(i.node_id): str(i.last_activated_at) for i in infos})
                  if n not in asked]
        asked.update(unseen)
        ask(grid, roster, unseen, timeout_s)
        missing = expected - roster.answered() if first else len(roster.missing())
        if missing <= 0 or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    if missing > 0 and wait_s > 0:
        what = "expected nodes" if first else "dead nodes' partitions"
        warn(f"{missing} of the {what} did not come (back) within {wait_s:g} s; the round goes on without them")
