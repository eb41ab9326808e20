"""Node identity on the server: refused nodes, dead nodes (the SuperLink's own error replies), returning
and replacing nodes, duplicates; each event one log line. A grid stands in for the SuperLink: it assigns
message ids as Flower does and answers for dead nodes from the SuperLink's node id, 1."""

import logging
from itertools import count

import pytest
import torch

flwr = pytest.importorskip("flwr")
from flwr.app import ConfigRecord, Error, Message, RecordDict  # noqa: E402
from flwr.common.constant import ErrorCode  # noqa: E402

from budgetplan.execute.client import TrainSettings  # noqa: E402
from budgetplan.execute.loop import Job  # noqa: E402
from budgetplan.integrations.flower import records as rec  # noqa: E402
from budgetplan.integrations.flower.trainer import FlowerTrainer  # noqa: E402
from budgetplan.plan import ModelRef, Plan, PlanClass, PlanContext  # noqa: E402
from fl_helpers import AnsweringGrid, flower_task_identity  # noqa: E402

SUPERLINK_NODE_ID = 1
FP = "sha256:synthetic"


@pytest.fixture(autouse=True)
def flower_run():
    with flower_task_identity():
        yield


def _plan():
    def cls(name):
        return PlanClass(name=name, share=0.5, block_states=("trained",), trainable_names=("w",))
    return Plan(model=ModelRef(name="synthetic", fingerprint=FP, num_blocks=1),
                context=PlanContext(task="classification", num_labels=2, batch_size=4, seq_len=8),
                classes=(cls("weak"), cls("strong")))


class SuperLinkGrid(AnsweringGrid):
    """Nodes by id -> (class, partition); a node in `dead` gets the SuperLink's error reply, as in Flower 1.42."""

    def __init__(self, nodes):
        self.nodes = dict(nodes)
        self.dead: set[int] = set()
        self.slow: set[int] = set()  # connected, but their training reply misses the round
        self.ids = count(1)

    def get_node_ids(self):
        return [n for n in self.nodes if n not in self.dead]

    def answer(self, messages):
        replies = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = f"m{next(self.ids)}"  # as Flower's push_messages does
            node = message.metadata.dst_node_id
            if node in self.slow and message.metadata.message_type != rec.IDENTIFY_MESSAGE:
                continue
            if node in self.dead:
                reply = Message(Error(code=ErrorCode.NODE_UNAVAILABLE, reason="Error: Node Unavailable - no heartbeat"),
                                reply_to=message)
                reply.metadata.__dict__["_src_node_id"] = SUPERLINK_NODE_ID
            elif message.metadata.message_type == rec.IDENTIFY_MESSAGE:
                device_class, partition = self.nodes[node]
                answer = ConfigRecord({rec.DEVICE_CLASS: device_class, rec.PARTITION_ID: partition,
                                       rec.MODEL_FINGERPRINT: FP})
                reply = Message(RecordDict({rec.IDENTITY: answer}), reply_to=message)
            else:
                reply = Message(RecordDict({rec.ARRAYS: rec.to_arrays({"w": torch.ones(2) * node}),
                                            rec.METRICS: rec.to_metrics(4, {})}), reply_to=message)
            replies.append(reply)
        return replies


class Round:
    """One round as the loop drives the trainer: available -> jobs for every available client -> train."""

    def __init__(self, trainer, grid, round_index, die_mid_round=()):
        plan = trainer.plan
        self.available = trainer.available(None, round_index)
        jobs = [Job(c, plan.by_name(name), TrainSettings(), 0) for c, name in sorted(self.available.items())]
        grid.dead |= set(die_mid_round)  # after the node was sent its job: the SuperLink answers for it
        self.replies = sorted(trainer.train(None, {"w": torch.zeros(2)}, round_index, jobs, lambda c: None),
                              key=lambda r: r.client)
        self.trained = [r.client for r in self.replies if r.problem is None]
        self.dropped = {r.client: r.problem for r in self.replies if r.problem is not None}


def _lines(caplog):
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("budgetplan:")]
    assert all("\n" not in line for line in lines)
    return lines


def test_nodes_without_a_class_or_with_an_unknown_one_are_refused_in_one_line_and_never_sampled(caplog):
    grid = SuperLinkGrid({11: ("weak", 0), 12: ("", 1), 13: ("tablet", 2), 14: ("strong", 3)})
    trainer = FlowerTrainer(grid, _plan(), min_nodes=4, reply_timeout_s=1.0)
    with caplog.at_level(logging.WARNING, logger="flwr"):
        for round_index in (1, 2):
            assert sorted(Round(trainer, grid, round_index).available) == [0, 3]
    lines = _lines(caplog)
    assert len([line for line in lines if "node 12" in line]) == 1
    assert "node 12: has no device class" in next(line for line in lines if "node 12" in line)
    assert len([line for line in lines if "node 13" in line]) == 1
    assert "device class 'tablet' is not in the plan" in next(line for line in lines if "node 13" in line)


def test_a_dead_node_is_reported_with_the_superlinks_reason_and_replaced_by_its_restart(caplog):
    grid = SuperLinkGrid({11: ("weak", 0), 12: ("strong", 1)})
    trainer = FlowerTrainer(grid, _plan(), min_nodes=2, reply_timeout_s=1.0)
    with caplog.at_level(logging.WARNING, logger="flwr"):
        assert Round(trainer, grid, 1).trained == [0, 1]
        second = Round(trainer, grid, 2, die_mid_round=[12])
        assert second.trained == [0] and "Node Unavailable" in second.dropped[1]
        assert sorted(Round(trainer, grid, 3).available) == [0]  # not sampled while it is gone
        grid.nodes[21] = ("strong", 1)  # the restarted SuperNode: a new node id, the same partition
        fourth = Round(trainer, grid, 4)
    assert fourth.trained == [0, 1]
    lines = _lines(caplog)
    assert not any("was not asked" in line for line in lines), lines
    assert any("node 12 (client 1, class strong) is out: unavailable" in line for line in lines), lines
    assert any("node 21 (client 1, class strong) replaces node 12" in line for line in lines), lines
    assert set(trainer.nodes) == {11, 21}


def test_a_second_node_with_a_taken_partition_waits_and_takes_over_when_the_holder_dies(caplog):
    grid = SuperLinkGrid({11: ("weak", 0), 12: ("strong", 1), 13: ("strong", 1)})
    trainer = FlowerTrainer(grid, _plan(), min_nodes=2, reply_timeout_s=1.0)
    with caplog.at_level(logging.WARNING, logger="flwr"):
        Round(trainer, grid, 1)
        assert set(trainer.nodes) == {11, 12}
        del grid.nodes[12]  # leaves the federation
        second = Round(trainer, grid, 2)
    assert set(trainer.nodes) == {11, 13}
    assert second.trained == [0, 1]
    assert any("node 13: client 1 is already node 12" in line for line in _lines(caplog))


def test_a_node_that_only_misses_the_round_timeout_is_dropped_from_that_round_not_from_the_run(caplog):
    grid = SuperLinkGrid({11: ("weak", 0), 12: ("strong", 1)})
    trainer = FlowerTrainer(grid, _plan(), min_nodes=2, reply_timeout_s=1.0)
    with caplog.at_level(logging.WARNING, logger="flwr"):
        grid.slow.add(12)
        first = Round(trainer, grid, 1)
        assert first.trained == [0] and "no reply within the round's 1 s" in first.dropped[1]
        grid.slow.clear()
        assert Round(trainer, grid, 2).trained == [0, 1]
    assert not any("is out" in line for line in _lines(caplog))
