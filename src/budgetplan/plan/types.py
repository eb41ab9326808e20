"""The plan: one typed `Plan` that `budgetplan solve` writes and every later stage reads.

Spec: docs/plan-format.md; JSON Schema: budgetplan/schemas/plan.schema.json. `Plan.to_dict` / `Plan.from_dict`
are the only JSON layout (schema 2.2; 2.0, 2.1 and 1.x files still load, a class without a ladder as a ladder of
one). A plan names its model by the profile's
fingerprint (sha256 over parameter names, shapes and dtypes), so a plan applied to another model is refused.
Every cost says where it comes from: "derived" (composed from the profile's measured parts) or "measured"
(the profile ran that exact configuration).
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import math
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from budgetplan.errors import ConfigError, PlanError
from budgetplan.files import KINDS, kind_of_data, read_json
from budgetplan.plan.check import check_plan
from budgetplan.plan.recipe import DEFAULT_AGGREGATION_WEIGHTS, WEIGHT_NAMES, Recipe
from budgetplan.profile.types import DERIVED, FROZEN_OUTSIDE, MEASURED, is_quantized, is_recompute, lora_rank
from budgetplan.solve.objective import OBJECTIVES
from budgetplan.validate import check_schema, schema
from budgetplan.version import __version__

PLAN_KIND = "budgetplan-plan"
# 2.1: block states may carry "+recompute", and each active class names its recomputed blocks ("recompute").
# 2.2: a model path in model.spec is relative to the plan file's folder (or absolute), not to the working directory;
# an optional "recipe" (plan/recipe.py): server optimizer, aggregation weights, client optimizer state, rates;
# block states may carry "+int8", each active class names its quantised blocks ("quantized"), and the solver
# section says whether +int8 states were offered ("quantized"); the solver objective "coverage";
# an active class may carry a "ladder" of smaller configurations a client falls back to (older plans: none).
PLAN_SCHEMA_VERSION = "2.2"
DIGEST_SCHEMA = "2.1"  # Plan.digest hashes every plan as version 2.1 did, so older run directories still resume
READABLE_MAJORS = ("1", "2")  # 1.x: the same layout plus a duplicate 'upload_keys' list per class
AGGREGATION = {"rule": "layerwise-weighted-mean", "weight": "num_examples", "untrained": "keep-previous"}
FIX = "regenerate it with 'budgetplan solve --json PATH'"


@dataclass(frozen=True)
class SolverSettings:
    """How the plan was solved (the plan's "solver" section)."""

    objective: str
    contiguous: bool
    time_limit_s: float
    seed: int
    workers: int
    recompute: bool = True  # whether +recompute states were offered to the solver (False: --no-recompute)
    quantized: bool = True  # whether +int8 states were offered to the solver (False: --no-quantized)

    def __post_init__(self):
        if self.objective not in OBJECTIVES:
            raise ConfigError(f"unknown objective '{self.objective}'; use one of: {', '.join(OBJECTIVES)}")
        if not (isinstance(self.time_limit_s, (int, float)) and math.isfinite(self.time_limit_s)
                and self.time_limit_s > 0):
            raise ConfigError(f"time_limit_s = {self.time_limit_s!r} must be a number of seconds > 0")
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ConfigError(f"workers = {self.workers!r} must be a whole number >= 1")
        if not isinstance(self.seed, int):
            raise ConfigError(f"seed = {self.seed!r} must be a whole number")


@dataclass(frozen=True)
class ModelRef:
    """The model a plan is for; executors load `spec` and refuse another `fingerprint`."""

    name: str
    fingerprint: str
    num_blocks: int
    spec: str = ""  # how to load it (bundled name, model file or directory); "" = name
    block_path: str | None = None
    family: str | None = None
    num_params: int | None = None
    library_versions: dict = field(default_factory=dict)

    @property
    def load_spec(self) -> str:
        return self.spec or self.name


@dataclass(frozen=True)
class PlanContext:
    """The training step the plan's costs were profiled for."""

    task: str = "classification"
    num_labels: int | None = None
    batch_size: int = 8
    seq_len: int | None = None
    image_size: int | None = None
    dtype: str = "torch.float32"
    optimizer: str = "adamw"
    train_embeddings: bool = False
    lora_ranks: tuple[int, ...] = ()
    lora_alpha_per_rank: float = 2.0
    lora_targets: tuple[str, ...] = ()
    device: str = "cpu"


@dataclass(frozen=True)
class PlanBudget:
    """A class's budgets as the solver used them (integers)."""

    memory_bytes: int  # peak bytes of one training step
    flops_per_round: int
    flops_per_step: int  # the same budget for one profiled batch
    upload_bytes: int  # per round
    samples_per_round: int


@dataclass(frozen=True)
class PredictedCosts:
    """What the plan predicts for one training step of the profiling context; source "derived"."""

    peak_bytes: int
    flops_forward: int
    flops_backward: int
    upload_bytes: int  # per round: the trained tensors, once
    flops_per_round: int | None = None
    activation_bytes: int | None = None
    trainable_params: int | None = None
    optimizer_state_bytes: int | None = None
    source: str = DERIVED

    @property
    def flops_per_step(self) -> int:
        return self.flops_forward + self.flops_backward


@dataclass(frozen=True)
class SolveAnswer:
    """The solver's answer for a class: proof status, objective value, slack per budget, the binding budget."""

    status: str  # OPTIMAL (proved) or FEASIBLE (time limit hit first)
    objective_value: float
    binding: str  # memory | compute | upload | none
    slack_memory_bytes: int
    slack_flops_per_round: int
    slack_upload_bytes: int


@dataclass(frozen=True)
class Rung:
    """A fallback configuration of a class: what a client trains when the class's plan does not fit right now."""

    block_states: tuple[str, ...]
    trainable_names: tuple[str, ...]
    predicted: PredictedCosts | None = None  # composed from the profile like the class's own (source "derived")
    measured_peak_bytes: int | None = None  # source "measured": the profile ran this exact configuration


@dataclass(frozen=True)
class PlanClass:
    """One device class: its configuration, what it trains (and uploads), its budget and predicted costs."""

    name: str
    share: float  # fraction of the fleet's clients
    block_states: tuple[str, ...]
    trainable_names: tuple[str, ...]  # task-model tensor names it trains and uploads (LoRA: the adapters)
    active: bool = True  # False: nothing fits this class; its clients sit out
    reason: str | None = None  # why nothing fits, when not active
    train_embeddings: bool = False
    lora_alpha_per_rank: float = 2.0
    int8_embeddings: bool = False  # 2.2: the class holds the frozen embedding tables in int8
    budget: PlanBudget | None = None  # None: a hand-made plan with no device class
    predicted: PredictedCosts | None = None
    measured_peak_bytes: int | None = None  # source "measured": the profile ran this exact configuration
    answer: SolveAnswer | None = None
    device: dict | None = None  # the device class as read (budgetplan.devices.DeviceClass fields)
    ladder: tuple[Rung, ...] = ()  # rungs 1, 2, ...: smaller configurations, the largest first (rung 0 = the plan)

    @property
    def rungs(self) -> int:
        """How many configurations a client of this class may train: the plan and its ladder."""
        return 1 + len(self.ladder) if self.active else 0

    def at_rung(self, rung: int) -> PlanClass:
        """The class as a client trains it at `rung` (0: itself); PlanError for a rung the class does not have."""
        if rung == 0:
            return self
        if not 0 < rung < self.rungs:
            raise PlanError(f"class {self.name} has no rung {rung} (it has rungs 0..{self.rungs - 1}); "
                            "the node ran another plan: give it the server's plan file")
        r = self.ladder[rung - 1]
        return replace(self, block_states=r.block_states, trainable_names=r.trainable_names, predicted=r.predicted,
                       measured_peak_bytes=r.measured_peak_bytes, answer=None, ladder=())


@dataclass(frozen=True)
class Plan:
    model: ModelRef
    context: PlanContext
    classes: tuple[PlanClass, ...]
    label: str = "plan"  # "plan", or the scheme of a `budgetplan compare` alternative
    solver: SolverSettings | None = None
    fleet: dict | None = None  # a fleet solve's summary: name, file, status, solve_s, score, candidates
    recipe: Recipe = field(default_factory=Recipe)  # how to train it; unset fields: the run's defaults
    created_utc: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc)
                             .isoformat(timespec="seconds"))
    generator: dict = field(default_factory=lambda: {"name": "budgetplan", "version": __version__})

    def by_name(self, name: str) -> PlanClass:
        for plan_class in self.classes:
            if plan_class.name == name:
                return plan_class
        raise PlanError(f"device class '{name}' is not in the plan; classes: {', '.join(c.name for c in self.classes)}")

    def with_classes(self, classes, label: str) -> Plan:
        return replace(self, classes=tuple(classes), label=label)

    def digest(self) -> str:
        """A stable hash of everything that changes training (used to refuse --resume with another plan)."""
        data = self.to_dict()
        data.pop("created_utc"), data.pop("generator")
        data["schema_version"] = DIGEST_SCHEMA  # a newer writer of the same plan: the same digest (resume works)
        if not data["recipe"]:
            data.pop("recipe")  # a plan without a recipe hashes as before recipes existed
        for entry in data["classes"].values():  # nor does a class with no int8 weights and no ladder
            for key, unset in (("quantized", None), ("int8_embeddings", False), ("ladder", None), ("ladder", [])):
                if key in entry and entry[key] == unset:
                    entry.pop(key)
        return "sha256:" + hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:24]

    def check_model(self, fingerprint: str, model_name: str) -> None:
        """Refuse a plan made for another model (compares parameter-layout fingerprints)."""
        expected = self.model.fingerprint
        if expected != fingerprint:
            raise PlanError(f"the plan is for model {self.model.name} (fingerprint {expected[:19]}...), "
                            f"but {model_name} has {fingerprint[:19]}...; solve a plan for this model")

    def to_dict(self) -> dict:
        """The plan JSON (schema 2.2): the only layout, read back by from_dict."""
        return {"kind": PLAN_KIND, "schema_version": PLAN_SCHEMA_VERSION, "generator": dict(self.generator),
                "created_utc": self.created_utc, "label": self.label,
                "model": {**{k: v for k, v in _fields(self.model).items() if v is not None},
                          "spec": self.model.load_spec},
                "context": _fields(self.context), "recipe": self.recipe.to_dict(),
                "aggregation": {**AGGREGATION, "weight": WEIGHT_NAMES[self.recipe.aggregation_weights
                                                                     or DEFAULT_AGGREGATION_WEIGHTS]},
                "solver": None if self.solver is None else {"name": "budgetplan-frontier", **_fields(self.solver)},
                "fleet": self.fleet, "classes": {c.name: class_to_dict(self, c) for c in self.classes}}

    @staticmethod
    def from_dict(data, origin: str = "plan") -> Plan:
        """The Plan of a plan JSON object (schema 2.x or 1.x); PlanError (one line) when it is not one."""
        validate_plan(data, origin)
        model, ctx = data["model"], data["context"]
        context = PlanContext(**{**_known(PlanContext, ctx), "lora_ranks": tuple(ctx.get("lora_ranks", ())),
                                 "lora_targets": tuple(ctx.get("lora_targets", ()))})
        solver = data.get("solver")
        return Plan(
            model=ModelRef(**{**_known(ModelRef, model), "library_versions": dict(model.get("library_versions", {}))}),
            context=context,
            classes=tuple(class_from_dict(str(n), c, context, model["num_blocks"]) for n, c in data["classes"].items()),
            label=str(data.get("label", "plan")),
            solver=None if solver is None else SolverSettings(**_known(SolverSettings, solver)),
            fleet=data.get("fleet"), recipe=recipe_from_dict(data.get("recipe"), origin),
            created_utc=str(data.get("created_utc", "")),
            generator=dict(data.get("generator", {})))


# ---- the JSON layout -----------------------------------------------------------------------------------------

def _fields(value) -> dict:
    """A typed section as JSON: tuples become lists."""
    return {f.name: list(v) if isinstance(v := getattr(value, f.name), tuple) else v for f in fields(value)}


def _known(cls, data: dict) -> dict:
    """The keys of `data` that are fields of `cls` (newer minor versions may add others)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def recipe_from_dict(data, origin: str) -> Recipe:
    """The plan's recipe (absent in plans before 2.2: every field the run's default); one line naming the file."""
    try:
        return Recipe.from_dict(data)
    except PlanError as exc:
        raise PlanError(f"{origin}: {exc}") from None


def class_to_dict(plan: Plan, c: PlanClass) -> dict:
    entry = {"share": c.share, "active": c.active, "device": c.device,
             "budget": None if c.budget is None else _fields(c.budget)}
    if not c.active:
        return {**entry, "reason": c.reason}
    answer = c.answer
    return {
        **entry,
        "block_states": list(c.block_states),
        "train_embeddings": c.train_embeddings,
        "int8_embeddings": c.int8_embeddings,
        "trainable_parameter_names": list(c.trainable_names),
        "lora": lora_spec(plan, c),
        "recompute": recompute_spec(c.block_states),
        "quantized": quantized_spec(plan, c.block_states),
        "predicted": None if c.predicted is None else _fields(c.predicted),
        "measured": measured_entry(c),
        **({"ladder": [rung_to_dict(plan, c, i) for i in range(1, c.rungs)]} if c.ladder else {}),
        **({} if answer is None else {
            "status": answer.status, "objective_value": answer.objective_value, "binding": answer.binding,
            "slack": {"memory_bytes": answer.slack_memory_bytes, "flops_per_round": answer.slack_flops_per_round,
                      "upload_bytes": answer.slack_upload_bytes}}),
    }


def rung_to_dict(plan: Plan, c: PlanClass, rung: int) -> dict:
    r = c.at_rung(rung)
    return {"block_states": list(r.block_states), "trainable_parameter_names": list(r.trainable_names),
            "lora": lora_spec(plan, r), "recompute": recompute_spec(r.block_states),
            "predicted": None if r.predicted is None else _fields(r.predicted), "measured": measured_entry(r)}


def rung_from_dict(data: dict) -> Rung:
    predicted, measured = data.get("predicted"), data.get("measured")
    return Rung(block_states=tuple(data["block_states"]), trainable_names=tuple(data["trainable_parameter_names"]),
                predicted=None if predicted is None else PredictedCosts(**_known(PredictedCosts, predicted)),
                measured_peak_bytes=None if measured is None else measured.get("peak_bytes"))


def class_from_dict(name: str, data: dict, context: PlanContext, num_blocks: int) -> PlanClass:
    """A class entry (validated) as a PlanClass; an inactive class trains nothing (its clients sit out)."""
    budget = data.get("budget")
    common = dict(name=name, share=float(data["share"]), device=data.get("device"),
                  budget=None if budget is None else PlanBudget(**_known(PlanBudget, budget)))
    if not data["active"]:
        return PlanClass(**common, block_states=(FROZEN_OUTSIDE,) * num_blocks, trainable_names=(),
                         active=False, reason=data.get("reason"))
    predicted, measured, slack = data.get("predicted"), data.get("measured"), data.get("slack")
    answer = None
    if "status" in data and slack is not None:
        answer = SolveAnswer(data["status"], data.get("objective_value", 0), data.get("binding", "none"),
                             slack["memory_bytes"], slack["flops_per_round"], slack["upload_bytes"])
    return PlanClass(
        **common, block_states=tuple(data["block_states"]),
        trainable_names=tuple(data["trainable_parameter_names"]),
        train_embeddings=bool(data.get("train_embeddings", False)),
        int8_embeddings=bool(data.get("int8_embeddings", False)),
        lora_alpha_per_rank=float((data.get("lora") or {}).get("alpha_per_rank", context.lora_alpha_per_rank)),
        predicted=None if predicted is None else PredictedCosts(**_known(PredictedCosts, predicted)),
        measured_peak_bytes=None if measured is None else measured.get("peak_bytes"), answer=answer,
        ladder=tuple(rung_from_dict(r) for r in data.get("ladder", ())))


def lora_spec(plan: Plan, plan_class: PlanClass) -> dict | None:
    """LoRA settings of a class for executors: rank per block, alpha, target modules, where the blocks are."""
    ranks = {str(i): lora_rank(s) for i, s in enumerate(plan_class.block_states) if lora_rank(s)}
    if not ranks:
        return None
    alpha = plan_class.lora_alpha_per_rank
    spec = {"ranks": ranks, "alpha_per_rank": alpha, "alpha": {i: alpha * r for i, r in ranks.items()},
            "target_modules": list(plan.context.lora_targets)}
    if plan.model.block_path:
        spec["blocks_path"] = plan.model.block_path
    return spec


def recompute_spec(block_states: tuple[str, ...]) -> dict | None:
    """Which blocks run under activation recomputation, and how (None when none does)."""
    blocks = [i for i, s in enumerate(block_states) if is_recompute(s)]
    if not blocks:
        return None
    return {"blocks": blocks, "method": "torch.utils.checkpoint", "use_reentrant": False}


def quantized_spec(plan: Plan, block_states: tuple[str, ...]) -> dict | None:
    """Which blocks a client holds with int8 frozen weights, and which layers of each (None when none)."""
    blocks = [i for i, s in enumerate(block_states) if is_quantized(s)]
    if not blocks:
        return None
    return {"blocks": blocks, "format": "int8-symmetric-per-output-channel", "layers": list(plan.context.lora_targets)}


def measured_entry(plan_class: PlanClass) -> dict | None:
    peak = plan_class.measured_peak_bytes
    return None if peak is None else {"source": MEASURED, "peak_bytes": peak}


def plan_schema() -> dict:
    """The plan's JSON Schema (a copy: the caller may change it)."""
    return copy.deepcopy(schema("plan"))


def validate_plan(data, origin: str = "plan") -> dict:
    """Check kind, major schema version, every field (JSON Schema) and the semantics; PlanError (one line)."""
    if not isinstance(data, dict) or data.get("kind") != PLAN_KIND:
        found = kind_of_data(data)
        if found is not None:
            raise PlanError(f"{origin} is {KINDS[found]}, not a budgetplan plan; {FIX}")
        raise PlanError(f"{origin} is not a budgetplan plan file (no \"kind\": \"{PLAN_KIND}\"); {FIX}")
    found = str(data.get("schema_version", ""))
    if found.split(".")[0] not in READABLE_MAJORS:
        raise PlanError(f"{origin} has schema version {found or 'none'}; this budgetplan reads "
                        f"{', '.join(m + '.x' for m in READABLE_MAJORS)}: {FIX}")
    check_schema(data, "plan", origin, FIX)  # also refuses NaN/Infinity and runaway nesting
    check_plan(data, origin)  # what a schema cannot state: states per block, gradient paths, shares, LoRA
    return data


def write_plan(plan: Plan, path: str | Path) -> None:
    """Write the plan JSON; a model path is stored relative to the plan's folder when the model lies in it (they
    move together), else absolute. A path is one that exists (relative to the working directory, or absolute)."""
    data = plan.to_dict()
    data["model"]["spec"] = spec_for_file(plan.model.load_spec, Path(path).parent)
    validate_plan(data, origin="the new plan")  # never write a plan that the reader would refuse
    Path(path).write_text(json.dumps(data, indent=1) + "\n")


def read_plan(path: str | Path) -> Plan:
    """The plan in a file; a relative model path in it is resolved against the plan file's folder."""
    data = read_json(path, "plan file", f"create one with 'budgetplan solve --json {path}'", PlanError,
                     kind=PLAN_KIND)
    plan = Plan.from_dict(data, origin=f"plan file {path}")
    spec = Path(plan.model.load_spec)
    beside = Path(path).parent / spec
    if not spec.is_absolute() and (beside.exists() or _is_relative_path(plan.model.load_spec)):
        return replace(plan, model=replace(plan.model, spec=str(beside.resolve())))
    return plan


def spec_for_file(spec: str, folder: Path) -> str:
    """How a plan file in `folder` names the model `spec`: relative to the folder when the model lies in it,
    absolute when it lies elsewhere; a name that is not a path (a bundled model) as it is."""
    if not Path(spec).exists():
        return spec
    model, folder = Path(spec).resolve(), folder.resolve()
    if model.is_relative_to(folder):
        return "./" + model.relative_to(folder).as_posix()
    return str(model)


def _is_relative_path(spec: str) -> bool:
    """A spec written as a relative path ("./model", "../models/x"), as write_plan writes one."""
    return spec.startswith(("./", "../"))
