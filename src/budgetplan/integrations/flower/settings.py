"""The executor's RunConfig as Flower run config (flat TOML keys in an app's pyproject) and back.

In Flower TOML there is no null: 0 stands for "not set" in seq-len, max-train and max-test, and "" in
data-dir, matching RunConfig's None.
"""

from __future__ import annotations

from collections.abc import Mapping

from budgetplan.errors import ConfigError
from budgetplan.execute.client import TrainSettings
from budgetplan.execute.rounds import RunConfig

PLAN_FILE = "plan-file"
RUN_DIR = "run-dir"
NUM_ROUNDS = "num-server-rounds"  # the name Flower's templates use
# A deployed app's own keys (not RunConfig): resume the run in run-dir, how long to wait for replies and nodes.
RESUME = "resume"
REPLY_TIMEOUT_S = "reply-timeout-s"
NODE_WAIT_S = "node-wait-s"
REPLY_TIMEOUT_DEFAULT_S = 600.0
NODE_WAIT_DEFAULT_S = 60.0

_NULL_INT = ("seq-len", "max-train", "max-test")


def run_config_values(config: RunConfig) -> dict[str, object]:
    """RunConfig as flat Flower run-config values (the simulated failure rate is left out)."""
    train = config.train
    values = {
        "dataset": config.data, NUM_ROUNDS: config.rounds, "clients": config.clients,
        "clients-per-round": config.clients_per_round, "partition": config.partition, "alpha": float(config.alpha),
        "seed": config.seed, "seq-len": config.seq_len or 0, "data-dir": config.data_dir or "",
        "max-train": config.max_train or 0, "max-test": config.max_test or 0, "measure": config.measure,
        "local-steps": train.local_steps, "batch-size": train.batch_size, "optimizer": train.optimizer,
        "lr": float(train.lr), "lora-lr-scale": float(train.lora_lr_scale), "head-lr-scale": float(train.head_lr_scale),
    }
    return values


def run_config_from_values(values: Mapping[str, object]) -> RunConfig:
    """The RunConfig described by a Flower run config; a missing or mistyped key is named with its fix."""
    try:
        train = TrainSettings(local_steps=int(_get(values, "local-steps")), batch_size=int(_get(values, "batch-size")),
                              optimizer=str(_get(values, "optimizer")), lr=float(_get(values, "lr")),
                              # absent from apps exported before the options existed: 1
                              lora_lr_scale=float(values.get("lora-lr-scale", 1.0)),
                              head_lr_scale=float(values.get("head-lr-scale", 1.0)))
        nullable = {key: int(_get(values, key)) or None for key in _NULL_INT}
        return RunConfig(
            data=str(_get(values, "dataset")), rounds=int(_get(values, NUM_ROUNDS)),
            clients=int(_get(values, "clients")), clients_per_round=int(_get(values, "clients-per-round")),
            train=train, partition=str(_get(values, "partition")), alpha=float(_get(values, "alpha")),
            seed=int(_get(values, "seed")), seq_len=nullable["seq-len"],
            data_dir=str(values.get("data-dir", "")) or None, max_train=nullable["max-train"],
            max_test=nullable["max-test"], measure=bool(values.get("measure", False)),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"Flower run config has a value of the wrong type ({exc}); fix [tool.flwr.app.config] "
                          "or the --run-config override") from None


def _get(values: Mapping[str, object], key: str):
    if key not in values:
        raise ConfigError(f"Flower run config lacks '{key}'; add it to [tool.flwr.app.config] in the app's "
                          "pyproject.toml (budgetplan export writes every key)")
    return values[key]
