"""Server side of the node handshake: ask each new node for its device class, partition and model.

Flower's Grid exposes node ids only; a node's class lives in its own Context.node_config. A node that
cannot run the plan (no class, a class the plan lacks, another model) is logged in one line, once, and
never sampled; the run continues with the others.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from logging import WARNING

from flwr.app import ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log

from budgetplan.integrations.flower import records as rec
from budgetplan.plan import Plan

PREFIX = "budgetplan:"


@dataclass(frozen=True)
class NodeIdentity:
    node_id: int
    device_class: str
    client: int  # partition id in simulation, else the node id: the key clients are sampled and sorted by


def warn(message: str) -> None:
    """One line in the server log (Flower's logger), prefixed so operators can grep for it."""
    log(WARNING, "%s %s", PREFIX, message.replace("\n", " "))


def wait_for_nodes(grid: Grid, count: int, timeout_s: float) -> list[int]:
    """Node ids once `count` nodes are connected (SuperNodes register after the ServerApp starts)."""
    deadline = time.monotonic() + timeout_s
    while len(nodes := list(grid.get_node_ids())) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    if len(nodes) < count:
        warn(f"only {len(nodes)} of the {count} expected nodes connected within {timeout_s:g} s; "
             "going on with those")
    return nodes


def identify_nodes(strategy, grid: Grid) -> None:
    """Ask every node the strategy has not yet seen who it is; record it in strategy.nodes or .rejected."""
    present = wait_for_nodes(grid, strategy.min_nodes, strategy.reply_timeout_s) if not strategy.nodes else \
        list(grid.get_node_ids())
    unseen = [n for n in present if n not in strategy.nodes and n not in strategy.rejected]
    if not unseen:
        return
    question = RecordDict({rec.CONFIG: ConfigRecord({rec.MODEL_FINGERPRINT: strategy.plan.model.fingerprint})})
    messages = [Message(content=question, dst_node_id=n, message_type=rec.IDENTIFY_MESSAGE) for n in unseen]
    replies = list(grid.send_and_receive(messages, timeout=strategy.reply_timeout_s))
    taken = {n.client: n.node_id for n in strategy.nodes.values()}
    for reply in sorted(replies, key=lambda r: r.metadata.src_node_id):
        node_id = reply.metadata.src_node_id
        identity, problem = judge(reply, strategy.plan, taken)
        if problem is not None:
            strategy.rejected[node_id] = problem
            warn(f"node {node_id}: {problem}; node skipped, the run continues without it")
            continue
        strategy.nodes[node_id] = identity
        taken[identity.client] = node_id
    answered = {r.metadata.src_node_id for r in replies}
    silent = [n for n in unseen if n not in answered]
    if silent:
        warn(f"{len(silent)} node(s) did not answer the identity query (e.g. node {silent[0]}); "
             "they are asked again next round")


def judge(reply: Message, plan: Plan, taken: dict[int, int]) -> tuple[NodeIdentity | None, str | None]:
    """The node's identity, or why it cannot run this plan (one line: what is wrong and what to do)."""
    node_id = reply.metadata.src_node_id
    if reply.has_error():
        reason = (reply.error.reason or "no reason given").strip().splitlines() or ["no reason given"]
        return None, f"could not say who it is ({reason[0][:300]})"
    if rec.IDENTITY not in reply.content.config_records:
        return None, "answered without budgetplan's identity record; run budgetplan's ClientApp on it"
    answer = reply.content.config_records[rec.IDENTITY]
    device_class = str(answer.get(rec.DEVICE_CLASS, ""))
    classes = ", ".join(c.name for c in plan.classes)
    if not device_class:
        return None, (f"has no device class; start its SuperNode with --node-config "
                      f"'{rec.DEVICE_CLASS}=\"<one of: {classes}>\"'")
    if device_class not in {c.name for c in plan.classes}:
        return None, (f"device class '{device_class}' is not in the plan (classes: {classes}); give the node one "
                      f"of these classes or solve a plan that includes '{device_class}'")
    fingerprint = str(answer.get(rec.MODEL_FINGERPRINT, ""))
    if fingerprint != plan.model.fingerprint:
        return None, (f"class {device_class} runs model {fingerprint or '(unknown)'} but the plan is for "
                      f"{plan.model.load_spec} ({plan.model.fingerprint}); load the plan's model on the node or solve a plan "
                      "for the node's model")
    partition = int(answer.get(rec.PARTITION_ID, rec.NO_PARTITION))
    client = partition if partition != rec.NO_PARTITION else node_id
    if client in taken:
        return None, f"client {client} is already node {taken[client]}; give each node its own partition-id"
    return NodeIdentity(node_id, device_class, client), None
