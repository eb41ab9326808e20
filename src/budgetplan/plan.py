"""Plan JSON: what `budgetplan solve` hands to executors (budgetplan's own, Flower, others).

Spec: docs/plan-format.md; JSON Schema: budgetplan/schemas/plan.schema.json. A plan names its model by the
profile's fingerprint (sha256 over parameter names, shapes and dtypes), so a plan applied to another model
is refused. Every cost says where it comes from: "derived" (composed from the profile's measured parts) or
"measured" (the profile ran that exact configuration).
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from budgetplan import __version__
from budgetplan.errors import PlanError
from budgetplan.files import check_format, read_json
from budgetplan.profile.compose import compose
from budgetplan.profile.types import ModelProfile, lora_rank
from budgetplan.solve.budget import COMPUTE, MEMORY, UPLOAD, budget_of, step_flops_cap

PLAN_KIND = "budgetplan-plan"
PLAN_SCHEMA_VERSION = "1.0"
AGGREGATION = {"rule": "layerwise-weighted-mean", "weight": "num_examples", "untrained": "keep-previous"}
DEVICE_FIELDS = ("name", "description", "memory_bytes", "total_memory_bytes", "flops_per_s", "uplink_bits_per_s",
                 "round_deadline_s", "upload_time_budget_s", "samples_per_round", "sources")


@dataclass(frozen=True)
class SolverSettings:
    objective: str
    contiguous: bool
    time_limit_s: float
    seed: int
    workers: int


@dataclass(frozen=True)
class PlannedClass:
    """One device class of a plan: its solution (None: nothing fits, the class sits out) and fleet share."""

    solution: object | None  # budgetplan.solve.DeviceSolution
    device: object  # budgetplan.devices.DeviceClass
    share: float
    reason: str | None = None  # why nothing fits, when solution is None


def trainable_names(profile: ModelProfile, block_states: tuple[str, ...]) -> list[str]:
    """Parameter names (of budgetplan's task model) a configuration trains, in model order."""
    names = list(profile.pre_trainable_names) if profile.context.train_embeddings else []
    for block, state in zip(profile.blocks, block_states):
        names += block.trainable_names.get(state, ())
    return names + list(profile.post_trainable_names)


def lora_spec(profile: ModelProfile, block_states: tuple[str, ...]) -> dict | None:
    ranks = {str(i): lora_rank(s) for i, s in enumerate(block_states) if lora_rank(s)}
    if not ranks:
        return None
    alpha = profile.context.lora_alpha_per_rank
    return {"ranks": ranks, "alpha_per_rank": alpha, "alpha": {i: alpha * r for i, r in ranks.items()},
            "target_modules": list(profile.context.lora_targets), "blocks_path": profile.model.block_path}


def _measured_peak(profile: ModelProfile, block_states: tuple[str, ...]) -> int | None:
    for config in profile.configs:
        if tuple(config.block_states) == tuple(block_states) and config.peak_bytes_measured is not None:
            return config.peak_bytes_measured
    return None


def _device(device) -> dict:
    data = {name: getattr(device, name) for name in DEVICE_FIELDS}
    data["sources"] = list(device.sources)
    return data


def _budget(device, profile: ModelProfile) -> dict:
    budget = budget_of(device)
    return {"memory_bytes": budget.memory_bytes, "flops_per_round": budget.flops_per_round,
            "flops_per_step": step_flops_cap(budget, profile.context.batch_size),
            "upload_bytes": budget.upload_bytes_per_round, "samples_per_round": budget.samples_per_round}


def class_entry(profile: ModelProfile, planned: PlannedClass) -> dict:
    entry = {"share": planned.share, "device": _device(planned.device), "budget": _budget(planned.device, profile)}
    solution = planned.solution
    if solution is None:
        return {**entry, "active": False, "reason": planned.reason}
    states = tuple(solution.block_states)
    cost = compose(profile, states)
    names = trainable_names(profile, states)
    measured = _measured_peak(profile, states)
    used = {u.name: u for u in solution.budgets}
    return {
        **entry,
        "active": True,
        "status": solution.status,
        "objective_value": solution.objective_value,
        "block_states": list(states),
        "train_embeddings": profile.context.train_embeddings,
        "trainable_parameter_names": names,
        "upload_keys": names,  # budgetplan uploads exactly what it trains (LoRA: the adapter tensors)
        "lora": lora_spec(profile, states),
        "predicted": {"source": "derived", "peak_bytes": cost.peak_bytes_predicted,
                      "flops_forward": cost.flops_forward, "flops_backward": cost.flops_backward,
                      "flops_per_round": solution.flops_per_round, "activation_bytes": cost.activation_bytes,
                      "upload_bytes": cost.upload_bytes, "trainable_params": cost.trainable_params,
                      "optimizer_state_bytes": cost.optimizer_state_bytes},
        "measured": {"source": "measured", "peak_bytes": measured} if measured is not None else None,
        "slack": {"memory_bytes": used[MEMORY].slack, "flops_per_round": used[COMPUTE].slack,
                  "upload_bytes": used[UPLOAD].slack},
        "binding": solution.binding,
    }


def build_plan(profile: ModelProfile, classes: list[PlannedClass], solver: SolverSettings,
               model_spec: str | None = None, fleet: dict | None = None) -> dict:
    """The plan JSON (as a dict) for one model and its device classes."""
    m, c = profile.model, profile.context
    return {
        "kind": PLAN_KIND,
        "schema_version": PLAN_SCHEMA_VERSION,
        "generator": {"name": "budgetplan", "version": __version__},
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model": {"name": m.name, "spec": model_spec or m.name, "fingerprint": m.fingerprint,
                  "num_blocks": m.num_blocks, "block_path": m.block_path, "family": m.family,
                  "num_params": m.num_params, "library_versions": dict(m.library_versions)},
        "context": {"task": c.task, "num_labels": c.num_labels, "batch_size": c.batch_size, "seq_len": c.seq_len,
                    "image_size": c.image_size, "dtype": c.dtype, "optimizer": c.optimizer,
                    "train_embeddings": c.train_embeddings, "lora_ranks": list(c.lora_ranks),
                    "lora_alpha_per_rank": c.lora_alpha_per_rank, "lora_targets": list(c.lora_targets),
                    "device": c.device},
        "aggregation": dict(AGGREGATION),
        "solver": {"name": "ortools-cp-sat", **solver.__dict__},
        "fleet": fleet,
        "classes": {p.device.name: class_entry(profile, p) for p in classes},
    }


def plan_from_fleet(result, settings: SolverSettings, model_spec: str | None = None) -> dict:
    """The plan of a fleet solve (budgetplan.solve.FleetSolution): the chosen model, every class, the candidates."""
    chosen, fleet = result.chosen, result.fleet
    planned = [PlannedClass(solution, member.device, member.share, reason)
               for member, solution, reason in zip(fleet.classes, chosen.solutions, chosen.reasons)]
    candidates = [{"model": c.profile.model.name, "fingerprint": c.profile.model.fingerprint, "score": c.score,
                   "classes": len(c.solutions), "classes_fit": sum(s is not None for s in c.solutions),
                   "chosen": c is chosen} for c in result.candidates]
    summary = {"name": fleet.name, "file": fleet.origin, "status": result.status, "solve_s": result.solve_s,
               "score": chosen.score, "candidates": candidates}
    return build_plan(chosen.profile, planned, settings, model_spec, summary)


def write_plan(plan: dict, path: str | Path) -> None:
    validate_plan(plan, origin="the new plan")  # never write a plan that the reader would refuse
    Path(path).write_text(json.dumps(plan, indent=1) + "\n")


def plan_schema() -> dict:
    return json.loads(resources.files("budgetplan").joinpath("schemas/plan.schema.json").read_text())


def _path_of(error) -> str:
    return "/".join(str(p) for p in error.absolute_path) or "(top level)"


def validate_plan(data, origin: str = "plan") -> dict:
    """Check kind, major schema version and every required field; PlanError (one line) otherwise."""
    import jsonschema

    check_format(data, PLAN_KIND, PLAN_SCHEMA_VERSION, origin, "solve again with 'budgetplan solve --json PATH'",
                 PlanError)
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(plan_schema()).iter_errors(data))
    if error is not None:
        raise PlanError(f"{origin}: {error.message} at {_path_of(error)}; regenerate it with 'budgetplan solve'")
    return data


def read_plan(path: str | Path) -> dict:
    data = read_json(path, "plan file", f"create one with 'budgetplan solve --json {path}'", PlanError)
    return validate_plan(data, origin=f"plan file {path}")


def check_model(plan: dict, fingerprint: str, model_name: str) -> None:
    """Refuse a plan made for another model (compares parameter-layout fingerprints)."""
    expected = plan["model"]["fingerprint"]
    if expected != fingerprint:
        raise PlanError(f"the plan is for model {plan['model']['name']} (fingerprint {expected[:19]}...), "
                        f"but {model_name} has {fingerprint[:19]}...; solve a plan for this model")
