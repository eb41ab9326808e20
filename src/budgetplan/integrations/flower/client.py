"""budgetplan's ClientApp: apply the received plan slice to the model, train, return exactly its upload keys.

Training is the embedded executor's `train_client`, with the same per-(seed, round, client) seed, data
partition and simulated failures, so a client trains the same tensors on either engine. A node is client
`partition-id` of its node_config; its device class is node_config["device-class"] (deployment), or in
Flower's simulation (its node_config has num-partitions) the class the executor assigns to that partition.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from budgetplan.errors import BudgetplanError, ConfigError, PlanError, first_line
from budgetplan.execute.client import ClientDropped, global_state_of, train_client
from budgetplan.execute.ladder import choose_rung, resources_of
from budgetplan.execute.loop import client_seed, simulated_failure
from budgetplan.execute.rounds import RunConfig, Setup
from budgetplan.integrations.flower import records as rec
from budgetplan.integrations.flower import setups
from budgetplan.integrations.flower.settings import run_config_from_values
from budgetplan.plan import Plan, PlanClass, read_plan

IDENTIFY_ACTION = rec.IDENTIFY_MESSAGE.split(".", 1)[1]
_BASES: dict[int, tuple[dict, str]] = {}  # id of a setup's template -> its initial global state and digest


@dataclass(frozen=True)
class ClientSource:
    """Where the ClientApp finds its plan and run settings: given in-process, or a plan file + run config."""

    plan: Plan | None = None
    config: RunConfig | None = None
    plan_file: str | None = None

    def resolve(self, context: Context) -> tuple[Plan, RunConfig]:
        plan = self.plan or _read_plan(self.plan_file)
        config = self.config or run_config_from_values(context.run_config)
        return plan, config


def _read_plan(plan_file: str | None) -> Plan:
    if plan_file is None:
        raise ConfigError("the ClientApp was given neither a plan nor a plan file; build it with "
                          "make_client_app(plan=...) or make_client_app(plan_file=...)")
    return read_plan(plan_file)


def node_setup(plan: Plan, config: RunConfig) -> Setup:
    """The model, dataset and partition for this plan and config, prepared once per process (setups.py)."""
    return setups.prepared(plan, config)


def node_client(context: Context, setup: Setup) -> tuple[int, str]:
    """(client index, device class) of this node."""
    node_config = context.node_config
    if rec.PARTITION_ID not in node_config:
        raise ConfigError(f"node has no '{rec.PARTITION_ID}' in its node config; start its SuperNode with "
                          f"--node-config '{rec.PARTITION_ID}=<0..{setup.config.clients - 1}>'")
    client = int(node_config[rec.PARTITION_ID])
    if not 0 <= client < setup.config.clients:
        raise ConfigError(f"{rec.PARTITION_ID}={client} is outside 0..{setup.config.clients - 1}; the run config "
                          f"has clients={setup.config.clients}: give each node its own id in that range")
    if rec.DEVICE_CLASS in node_config:
        return client, str(node_config[rec.DEVICE_CLASS])
    # Flower's simulation engine gives every virtual node partition-id and num-partitions: such a node takes
    # the class the executor assigns its partition. A deployed node must say its class; "" is refused.
    return client, setup.class_of[client] if rec.NUM_PARTITIONS in node_config else ""


def identify(source: ClientSource, message: Message, context: Context) -> Message:
    """Answer the server's identity query: device class, client index, model fingerprint."""
    try:
        plan, config = source.resolve(context)
        setup = node_setup(plan, config)
        client, device_class = node_client(context, setup)
    except BudgetplanError as exc:
        return _error_reply(message, exc)
    answer = ConfigRecord({rec.DEVICE_CLASS: device_class, rec.PARTITION_ID: client,
                           rec.MODEL_FINGERPRINT: setup.template.fingerprint})
    return Message(RecordDict({rec.IDENTITY: answer}), reply_to=message)


def train(source: ClientSource, message: Message, context: Context) -> Message:
    """Train this node's client under the plan slice in the message; a dropped client replies with an Error."""
    try:
        plan, config = source.resolve(context)
        setup = node_setup(plan, config)
        client, device_class = node_client(context, setup)
        slice_config = message.content.config_records[rec.CONFIG]
        class_plan = rec.slice_from_config(slice_config, plan)
        _check_slice(class_plan.name, device_class, str(slice_config.get(rec.MODEL_FINGERPRINT, "")), setup)
        round_index = int(slice_config[rec.SERVER_ROUND])
        global_state = _global_state(setup, rec.to_state(message.content.array_records[rec.ARRAYS]),
                                     slice_config.get(rec.BASE_DIGEST))
        rung = node_rung(class_plan, config, round_index, client, setup.plan.context.device)
        settings = replace(config.train, fail_at_step=simulated_failure(setup, round_index, client))
        data = setup.dataset.train.subset(setup.parts.clients[client])
        result = train_client(setup.template, global_state, class_plan.at_rung(rung), data, settings,
                              client_seed(config.seed, round_index, client))
    except (BudgetplanError, RuntimeError, ValueError, MemoryError) as exc:  # the embedded loop drops these too
        return _error_reply(message, exc)
    content = RecordDict({rec.ARRAYS: rec.to_arrays(result.upload),
                          rec.METRICS: rec.to_metrics(result.num_examples, {**result.metrics, "rung": rung})})
    return Message(content, reply_to=message)


def node_rung(class_plan: PlanClass, config: RunConfig, round_index: int, client: int, device: str) -> int:
    """The rung this node trains: the embedded engine's choice (execute/ladder.py) over what this node has free
    now (or the run's simulated free memory); ClientDropped, with the reason, when no rung fits."""
    choice = choose_rung(class_plan, resources_of(config, class_plan, round_index, client, device),
                         config.memory_margin, config.train.local_steps, config.ladder)
    if choice.rung is None:
        raise ClientDropped(choice.reason)
    return choice.rung


def _global_state(setup: Setup, received: dict, base_digest) -> dict:
    """The global state a training message describes: the tensors it carries over this node's own copy of the
    run's initial state, when the server sent only what changed (checked against the server's digest)."""
    if base_digest is None:
        return received  # the whole global state
    if id(setup.template) not in _BASES:
        _BASES.clear()
        base = global_state_of(setup.template)
        _BASES[id(setup.template)] = (base, rec.state_digest(base))
    base, digest = _BASES[id(setup.template)]
    if digest != str(base_digest):
        raise PlanError(f"this node's initial weights ({digest[:19]}) differ from the server's "
                        f"({str(base_digest)[:19]}); run the same budgetplan, torch and transformers versions and "
                        "the same run config on the server and the nodes")
    return {**base, **received}


def _error_reply(message: Message, exc: Exception) -> Message:
    """A one-line Error reply: the server logs it and goes on without this node."""
    reason = first_line(exc)
    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=message)


def _check_slice(slice_class: str, device_class: str, fingerprint: str, setup: Setup) -> None:
    if slice_class != device_class:
        raise PlanError(f"received the plan slice of class '{slice_class}' but this node is '{device_class}'; "
                        "the server's view of the node is stale: restart the run")
    if fingerprint != setup.template.fingerprint:
        raise PlanError(f"the plan slice is for model {fingerprint} but this node runs "
                        f"{setup.template.fingerprint}; load the plan's model on the node")


def make_client_app(plan: Plan | None = None, config: RunConfig | None = None,
                    plan_file: str | Path | None = None) -> ClientApp:
    """A ClientApp running budgetplan's client side (identity query + training) for a plan."""
    source = ClientSource(plan, config, None if plan_file is None else str(plan_file))
    app = ClientApp()

    @app.query(IDENTIFY_ACTION)
    def _identify(message: Message, context: Context) -> Message:
        return identify(source, message, context)

    @app.train()
    def _train(message: Message, context: Context) -> Message:
        return train(source, message, context)

    return app
