"""What the executor needs from a plan: one ClassPlan per device class, read through one adapter.

`run_plan_from_dict` is the only place that knows the plan JSON layout (written by budgetplan.plan); a change
of that layout changes this adapter only. Plans built in-process (compare's alternatives, tests) are
RunPlan values directly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from budgetplan.errors import PlanError
from budgetplan.files import read_json

# The schemes `budgetplan compare` runs side by side: (a) the plan, (b) CAFF last-k, (c) LoRA, (d) full, (e) head.
SCHEMES = ("budgetplan", "caff", "lora", "full", "head")


@dataclass(frozen=True)
class ClassPlan:
    """One device class: its configuration, what the plan predicts for one step, and its budgets."""

    name: str
    share: float  # fraction of the fleet
    block_states: tuple[str, ...]
    train_embeddings: bool
    upload_keys: tuple[str, ...]  # trained tensor names, task-model names (LoRA: adapter tensors)
    predicted_peak_bytes: int | None = None
    predicted_flops: int | None = None  # forward + backward of one step of the profiling context
    predicted_upload_bytes: int | None = None
    memory_budget_bytes: int | None = None
    flops_budget: int | None = None  # per step
    upload_budget_bytes: int | None = None  # per round
    active: bool = True  # False: nothing fits this class; its clients sit out
    lora_alpha_per_rank: float = 2.0


@dataclass(frozen=True)
class RunPlan:
    model: str  # a bundled name or a model file / directory
    fingerprint: str
    task: str
    num_labels: int | None
    batch_size: int
    seq_len: int | None
    optimizer: str
    classes: tuple[ClassPlan, ...]
    label: str = "plan"
    extra: dict = field(default_factory=dict)

    def by_name(self, name: str) -> ClassPlan:
        for plan in self.classes:
            if plan.name == name:
                return plan
        raise PlanError(f"device class '{name}' is not in the plan; classes: {', '.join(c.name for c in self.classes)}")

    def digest(self) -> str:
        """A stable hash of everything that changes training (used to refuse --resume with another plan)."""
        return "sha256:" + hashlib.sha256(json.dumps(run_plan_to_dict(self), sort_keys=True).encode()).hexdigest()[:24]


def _get(data: dict, *paths, default=None):
    """The first present value among dotted paths."""
    for path in paths:
        node = data
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            return node
    return default


def class_plan_from_dict(name: str, data: dict, alpha_per_rank: float, num_blocks: int | None = None) -> ClassPlan:
    if not data.get("active", True) and "block_states" not in data and num_blocks:
        # nothing fits this class: its clients sit out, so any configuration is a placeholder
        data = {**data, "block_states": ["frozen_outside"] * num_blocks, "upload_keys": []}
    if "block_states" not in data:
        raise PlanError(f"plan class '{name}' has no block_states; regenerate the plan with 'budgetplan solve'")
    flops_f = _get(data, "predicted.flops_forward", "flops_forward")
    flops_b = _get(data, "predicted.flops_backward", "flops_backward")
    return ClassPlan(
        name=name,
        share=float(_get(data, "share", "fleet_share", default=0.0)),
        block_states=tuple(data["block_states"]),
        train_embeddings=bool(data.get("train_embeddings", False)),
        upload_keys=tuple(_get(data, "upload_keys", "trainable_names", "trainable_parameter_names", default=())),
        predicted_peak_bytes=_get(data, "predicted.peak_bytes", "peak_bytes_predicted", "predicted_peak_bytes"),
        predicted_flops=_get(data, "predicted.flops") or (flops_f + flops_b if flops_f is not None and flops_b is not None else None),
        predicted_upload_bytes=_get(data, "predicted.upload_bytes", "upload_bytes"),
        memory_budget_bytes=_get(data, "budget.memory_bytes", "budget.peak_bytes", "memory_budget_bytes"),
        flops_budget=_get(data, "budget.flops", "budget.flops_per_step", "flops_budget"),
        upload_budget_bytes=_get(data, "budget.upload_bytes", "budget.uplink_bytes", "upload_budget_bytes"),
        active=bool(data.get("active", True)),
        lora_alpha_per_rank=float(_get(data, "lora.alpha_per_rank", default=alpha_per_rank)),
    )


def run_plan_from_dict(data: dict, origin: str = "plan") -> RunPlan:
    """Adapter from the plan JSON to RunPlan; every missing field is named with how to fix it."""
    if not isinstance(data, dict):
        raise PlanError(f"{origin} is not a JSON object; regenerate it with 'budgetplan solve'")
    classes = data.get("classes")
    if not isinstance(classes, dict) or not classes:
        raise PlanError(f"{origin} has no 'classes' mapping; regenerate it with 'budgetplan solve'")
    alpha = float(_get(data, "context.lora_alpha_per_rank", default=2.0))
    model = _get(data, "model.spec", "model.name", "model")
    fingerprint = _get(data, "model.fingerprint", "fingerprint")
    if not isinstance(model, str) or not isinstance(fingerprint, str):
        raise PlanError(f"{origin} does not name its model and fingerprint; regenerate it with 'budgetplan solve'")
    try:
        num_blocks = _get(data, "model.num_blocks")
        parsed = tuple(class_plan_from_dict(str(n), c, alpha, num_blocks) for n, c in classes.items())
        return RunPlan(model=model, fingerprint=fingerprint,
                       task=_get(data, "context.task", default="classification"),
                       num_labels=_get(data, "context.num_labels"),
                       batch_size=int(_get(data, "context.batch_size", default=8)),
                       seq_len=_get(data, "context.seq_len"), optimizer=_get(data, "context.optimizer", default="adamw"),
                       classes=parsed, label=str(data.get("label", "plan")))
    except (TypeError, ValueError, AttributeError) as exc:
        raise PlanError(f"{origin} has a malformed field ({exc}); regenerate it with 'budgetplan solve'") from None


def run_plan_to_dict(plan: RunPlan) -> dict:
    """The executor's own JSON form of a RunPlan (kept in every run directory)."""
    classes = {}
    for c in plan.classes:
        item = asdict(c)
        item.pop("name")
        item["block_states"] = list(c.block_states)
        item["upload_keys"] = list(c.upload_keys)
        classes[c.name] = item
    return {"kind": "budgetplan-run-plan", "label": plan.label,
            "model": {"spec": plan.model, "fingerprint": plan.fingerprint},
            "context": {"task": plan.task, "num_labels": plan.num_labels, "batch_size": plan.batch_size,
                        "seq_len": plan.seq_len, "optimizer": plan.optimizer},
            "classes": classes}


def run_plan_from_run_dict(data: dict) -> RunPlan:
    """Read back run_plan_to_dict's form."""
    classes = tuple(ClassPlan(name=n, **{**c, "block_states": tuple(c["block_states"]),
                                         "upload_keys": tuple(c["upload_keys"])}) for n, c in data["classes"].items())
    ctx = data["context"]
    return RunPlan(model=data["model"]["spec"], fingerprint=data["model"]["fingerprint"], task=ctx["task"],
                   num_labels=ctx["num_labels"], batch_size=ctx["batch_size"], seq_len=ctx["seq_len"],
                   optimizer=ctx["optimizer"], classes=classes, label=data.get("label", "plan"))


def read_run_plan(path: str | Path) -> RunPlan:
    data = read_json(path, "plan file", "create one with 'budgetplan solve --json PATH' or check the path", PlanError)
    if isinstance(data, dict) and data.get("kind") == "budgetplan-run-plan":
        return run_plan_from_run_dict(data)
    if isinstance(data, dict) and data.get("kind") == "budgetplan-plan":
        from budgetplan.plan import validate_plan

        validate_plan(data, origin=f"plan file {path}")
    return run_plan_from_dict(data, origin=f"plan file {path}")


def with_classes(plan: RunPlan, classes, label: str) -> RunPlan:
    return replace(plan, classes=tuple(classes), label=label)
