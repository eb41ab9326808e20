"""Names and conversions between budgetplan's data and Flower records.

A training message holds the global model as an ArrayRecord under ARRAYS and the node's plan slice as a
flat ConfigRecord under CONFIG (ConfigRecord values are scalars or lists of them: no nested dicts). A reply
holds exactly the plan's upload tensors under ARRAYS and a MetricRecord under METRICS with NUM_EXAMPLES.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields

import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from torch import Tensor

from budgetplan.execute.plans import ClassPlan

ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
IDENTITY = "identity"
NUM_EXAMPLES = "num-examples"  # the weight of a reply; Flower's stock strategies use the same key

# Who a node is: asked once per node before it is first sampled (Flower's server sees only node ids).
IDENTIFY_MESSAGE = "query.budgetplan_identify"
DEVICE_CLASS = "device-class"  # also the node_config key a deployed SuperNode sets with --node-config
PARTITION_ID = "partition-id"  # Flower's simulation node_config key
MODEL_FINGERPRINT = "model-fingerprint"
SERVER_ROUND = "server-round"
NO_PARTITION = -1


def to_arrays(state: Mapping[str, Tensor]) -> ArrayRecord:
    """A torch state dict as an ArrayRecord; contiguous CPU copies, dtype and bits kept."""
    return ArrayRecord({k: v.detach().cpu().contiguous() for k, v in state.items()})


def to_state(arrays: ArrayRecord) -> dict[str, Tensor]:
    """An ArrayRecord as a torch state dict (each tensor owns its memory, so callers may modify it)."""
    return {k: torch.from_numpy(arrays[k].numpy().copy()) for k in arrays}


def to_metrics(num_examples: int, metrics: Mapping[str, float]) -> MetricRecord:
    record = MetricRecord({NUM_EXAMPLES: int(num_examples)})
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue  # MetricRecord holds numbers only; other client metrics stay local
        record[key] = value
    return record


def to_config(values: Mapping[str, object]) -> ConfigRecord:
    """A flat ConfigRecord; empty lists are left out (Flower cannot size them) and read back as ()."""
    record = ConfigRecord()
    for key, value in values.items():
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, list) and not value:
            continue
        record[key] = value
    return record


def config_list(config: Mapping[str, object], key: str) -> tuple:
    value = config.get(key, [])
    return tuple(value) if isinstance(value, list) else (value,)


# ---- a device class's plan slice as a flat ConfigRecord ---------------------------------------------------

def slice_config(plan: ClassPlan, fingerprint: str, round_index: int) -> ConfigRecord:
    """Every ClassPlan field under its own key (underscores become dashes), plus the round and the model."""
    values: dict[str, object] = {f.name.replace("_", "-"): getattr(plan, f.name) for f in fields(ClassPlan)}
    values = {k: v for k, v in values.items() if v is not None}
    values[DEVICE_CLASS] = values.pop("name")
    values[MODEL_FINGERPRINT] = fingerprint
    values[SERVER_ROUND] = int(round_index)
    return to_config(values)


def slice_from_config(config: Mapping[str, object]) -> ClassPlan:
    """The ClassPlan a slice_config record describes; absent lists read as (), absent optionals as None."""
    values = {}
    for f in fields(ClassPlan):
        key = DEVICE_CLASS if f.name == "name" else f.name.replace("_", "-")
        if f.name in ("block_states", "upload_keys"):
            values[f.name] = tuple(str(v) for v in config_list(config, key))
        elif key in config:
            values[f.name] = config[key]
    return ClassPlan(**values)
