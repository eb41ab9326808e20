"""Names and conversions between budgetplan's data and Flower records.

A training message holds the global model as an ArrayRecord under ARRAYS and the node's plan slice in a
ConfigRecord under CONFIG: the class's entry of the plan JSON as one string (ConfigRecord values are scalars
or lists of them: no nested dicts). A reply holds exactly the class's trainable tensors under ARRAYS and a MetricRecord under METRICS with NUM_EXAMPLES.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord
from torch import Tensor

from budgetplan.errors import PlanError
from budgetplan.plan import Plan, PlanClass, class_from_dict, class_to_dict

ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
IDENTITY = "identity"
NUM_EXAMPLES = "num-examples"  # the weight of a reply; Flower's stock strategies use the same key

# Who a node is: asked once per node before it is first sampled (Flower's server sees only node ids).
IDENTIFY_MESSAGE = "query.budgetplan_identify"
DEVICE_CLASS = "device-class"  # also the node_config key a deployed SuperNode sets with --node-config
PARTITION_ID = "partition-id"  # Flower's simulation node_config key
NUM_PARTITIONS = "num-partitions"  # set by Flower's simulation engine only
MODEL_FINGERPRINT = "model-fingerprint"
SERVER_ROUND = "server-round"
PLAN_CLASS = "plan-class"
# A training message carries only the tensors that differ from the run's initial global state (the base every
# node builds itself: same model, seed and run config); BASE_DIGEST names that base so a node can check it.
BASE_DIGEST = "base-digest"
NO_PARTITION = -1


def to_arrays(state: Mapping[str, Tensor]) -> ArrayRecord:
    """A torch state dict as an ArrayRecord; contiguous CPU copies, dtype and bits kept."""
    return ArrayRecord({k: v.detach().cpu().contiguous() for k, v in state.items()})


def to_state(arrays: ArrayRecord) -> dict[str, Tensor]:
    """An ArrayRecord as a torch state dict (each tensor owns its memory, so callers may modify it)."""
    return {k: torch.from_numpy(arrays[k].numpy().copy()) for k in arrays}


def state_digest(state: Mapping[str, Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of a state dict, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return "sha256:" + digest.hexdigest()


def changed_since(state: Mapping[str, Tensor], base: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The tensors of `state` that `base` lacks or holds with other values (bit for bit)."""
    return {k: v for k, v in state.items() if k not in base or not torch.equal(v, base[k])}


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


# ---- a device class's plan slice: its entry of the plan JSON (the one layout), as a string ----------------

def slice_config(plan: Plan, plan_class: PlanClass, round_index: int) -> ConfigRecord:
    """The class's plan entry (Plan.to_dict's layout) under PLAN_CLASS, plus its name, the model and the round."""
    return to_config({DEVICE_CLASS: plan_class.name, PLAN_CLASS: json.dumps(class_to_dict(plan, plan_class)),
                      MODEL_FINGERPRINT: plan.model.fingerprint, SERVER_ROUND: int(round_index)})


def slice_from_config(config: Mapping[str, object], plan: Plan) -> PlanClass:
    """The PlanClass a slice_config record describes (read against the node's copy of the plan)."""
    try:
        entry = json.loads(str(config[PLAN_CLASS]))
        return class_from_dict(str(config[DEVICE_CLASS]), entry, plan.context, plan.model.num_blocks)
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanError(f"the server's plan slice is malformed ({type(exc).__name__}: {exc}); run the same "
                        "budgetplan version on the server and the nodes") from None
