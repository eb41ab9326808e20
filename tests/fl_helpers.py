"""Small plans and run settings for executor tests: tiny-bert, a slice of the drug reviews, few steps."""

from __future__ import annotations

import functools

import torch

from budgetplan.execute.client import TrainSettings
from budgetplan.execute.rounds import RunConfig
from budgetplan.execute.setup import trainable_names_of
from budgetplan.models import load_model
from budgetplan.plan import ModelRef, Plan, PlanBudget, PlanClass, PlanContext

LAST_ONE = ("frozen", "frozen", "frozen", "trained")
LAST_TWO = ("frozen", "frozen", "trained", "trained")
LORA_ALL = ("lora-4",) * 4


@functools.lru_cache(maxsize=None)
def tiny_bert(num_labels: int = 3):
    torch.manual_seed(0)
    return load_model("tiny-bert", num_labels=num_labels)


def memory_budget(memory_bytes: int) -> PlanBudget:
    """A budget that only memory can bind (compute and upload far above any tiny-bert step)."""
    return PlanBudget(memory_bytes=memory_bytes, flops_per_round=10**15, flops_per_step=10**15,
                      upload_bytes=10**12, samples_per_round=64)


def class_plan(name: str, share: float, states, **kw) -> PlanClass:
    """A hand-made class (no budget, no predicted costs) training `states` of tiny-bert."""
    return PlanClass(name=name, share=share, block_states=tuple(states),
                     trainable_names=trainable_names_of(tiny_bert(), tuple(states)), **kw)


def tiny_plan(*classes: PlanClass) -> Plan:
    classes = classes or (class_plan("weak", 0.5, LAST_ONE), class_plan("mid", 0.25, LAST_TWO),
                          class_plan("lora", 0.25, LORA_ALL))
    model = ModelRef(name="tiny-bert", fingerprint=tiny_bert().fingerprint, num_blocks=4)
    context = PlanContext(task="classification", num_labels=3, batch_size=4, seq_len=16, optimizer="adamw")
    return Plan(model=model, context=context, classes=tuple(classes))


def tiny_config(rounds: int = 3, **kw) -> RunConfig:
    base = dict(data="drugreview", rounds=rounds, clients=6, clients_per_round=4,
                train=TrainSettings(local_steps=2, batch_size=4, lr=1e-3), max_train=120, max_test=24, seq_len=16,
                measure=False)
    base.update(kw)
    return RunConfig(**base)


def flower_task_identity():
    """Context manager: Flower stamps every new Message with the current run, node and task ids, which its
    runtimes set; strategy tests that build messages outside a Flower run set them by hand."""
    import contextlib

    from flwr.supercore.task_identity import TaskIdentity

    @contextlib.contextmanager
    def scope():
        old = TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 7, 1, 3
        try:
            yield
        finally:
            TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = old
    return scope()


class AnsweringGrid:
    """The Grid calls the Flower trainer makes, for fakes: a subclass's `answer(messages)` returns the replies
    at once (a message it does not answer gets none); push_messages gives each message an id first, as
    Flower does, and pull_messages hands each reply out once."""

    def push_messages(self, messages):
        self._ids = getattr(self, "_ids", 0)
        self._replies = getattr(self, "_replies", {})
        messages = list(messages)
        for message in messages:
            if not message.metadata.message_id:
                self._ids += 1
                message.metadata.__dict__["_message_id"] = f"id{self._ids}"
        for reply in self.answer(messages):
            self._replies[reply.metadata.reply_to_message_id] = reply
        return [m.metadata.message_id for m in messages]

    def pull_messages(self, message_ids):
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def get_nodes(self):
        """Flower's Grid.get_nodes: NodeInfo per node id (a subclass's `keys`, node id -> PEM key, if any)."""
        from flwr.proto.node_pb2 import NodeInfo

        keys = getattr(self, "keys", {})
        return [NodeInfo(node_id=n, public_key=keys.get(n, b"")) for n in self.get_node_ids()]
