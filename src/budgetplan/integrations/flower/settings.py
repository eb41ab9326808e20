"""The executor's RunConfig as Flower run config (flat TOML keys in an app's pyproject) and back.

The keys come from the settings themselves (execute/settings.py: each setting's Flower key, default and type). In
Flower TOML there is no null: 0 (or "") stands for "not set" in an optional setting (seq-len, max-train, max-test,
data-dir), matching RunConfig's None.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import MISSING

from budgetplan.errors import ConfigError
from budgetplan.execute.settings import RunConfig, Setting, all_settings, build, flat_values, for_plan

PLAN_FILE = "plan-file"
RUN_DIR = "run-dir"
NUM_ROUNDS = "num-server-rounds"  # RunConfig.rounds' key (settings.py), the name Flower's templates use
# A deployed app's own keys (not RunConfig): resume the run in run-dir, how long to wait for replies and nodes.
RESUME = "resume"
REPLY_TIMEOUT_S = "reply-timeout-s"
NODE_WAIT_S = "node-wait-s"
REPLY_TIMEOUT_DEFAULT_S = 600.0
NODE_WAIT_DEFAULT_S = 60.0


def run_config_values(config: RunConfig) -> dict[str, object]:
    """RunConfig as flat Flower run-config values: every setting with a Flower key (settings.setting(flower=...))."""
    values = flat_values(config)
    return {s.flower_key: _to_toml(s, values[s.name]) for s in all_settings() if s.flower_key}


def run_config_from_values(values: Mapping[str, object], plan=None) -> RunConfig:
    """The RunConfig described by a Flower run config: an absent key (or 0 / "" in an optional one) is the plan's
    value where the setting takes one from the plan (its recipe, batch size, optimizer), else the setting's default
    (a required one, the dataset or a setting without a default, is named with its fix); a mistyped value is named
    too."""
    flat = {}
    for item in all_settings():
        if not item.flower_key or item.flower_key not in values:
            if item.flower_key and item.default is MISSING:
                raise ConfigError(f"Flower run config lacks '{item.flower_key}'; add it to [tool.flwr.app.config] in "
                                  "the app's pyproject.toml (budgetplan export writes every key)")
            continue
        flat[item.name] = _from_toml(item, values[item.flower_key])
    return build(flat) if plan is None else for_plan(plan, flat)


def refuse_on_flower(config: RunConfig) -> None:
    """Settings the Flower engine cannot honour, refused in one line before anything runs or is written.

    client_optimizer_state "keep": a Flower node runs every message in a fresh ClientApp process and a returning or
    replacing node may take another partition, so a client's optimizer state would have to live in a node-local
    file outside the server's checkpoint, and a resumed run would no longer end bit-identical. It stays embedded."""
    if config.client_optimizer_state == "keep":
        raise ConfigError("client optimizer state 'keep' runs on the embedded engine only (a Flower node trains each "
                          "round in a fresh process, outside the server's checkpoint); use --engine embedded or "
                          "--client-optimizer-state fresh")


def _to_toml(item: Setting, value):
    """TOML has no null: an unset optional setting is its type's zero ("" or 0), read back as None."""
    return item.value_type() if value is None else item.value_type(value)


def _from_toml(item: Setting, value):
    try:
        value = item.value_type(value)
    except (TypeError, ValueError):
        raise ConfigError(f"Flower run config: {item.flower_key} = {value!r} is of the wrong type (want "
                          f"{item.value_type.__name__}); fix "
                          "[tool.flwr.app.config] or the --run-config override") from None
    return None if item.optional and not value else value
