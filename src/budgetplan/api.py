"""budgetplan's Python API: what the commands do, callable in process. `budgetplan/__init__.py` re-exports it.

    import budgetplan
    task = budgetplan.load(my_bert, num_labels=3)          # an nn.Module in memory, a model.pt, an HF dir, a name
    profile = budgetplan.profile_model(task, batch_size=8, seq_len=128)
    plan = budgetplan.solve_plan(profile, ["jetson-nano", "raspberry-pi-4-4gb"])
    model = budgetplan.apply(plan, task, "jetson-nano")    # frozen blocks, LoRA injected; model(**batch).loss
    new_global = budgetplan.layerwise_mean(global_state, [(upload, num_examples), ...])

Every function is the one the CLI calls; nothing here prints. The stages are imported inside the functions on
purpose (start-up speed: `import budgetplan` loads no torch, transformers or OR-Tools); each such import goes
down the stages (tests/test_architecture.py checks).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:  # the heavy stages load on first use, so `import budgetplan` stays light
    from torch import Tensor, nn

    from budgetplan.devices import DeviceClass
    from budgetplan.execute.apply import PlannedModel
    from budgetplan.models.load import LoadedModel
    from budgetplan.plan import Plan, PlanClass
    from budgetplan.profile.types import ModelProfile

DeviceLike = Union[str, Path, "DeviceClass"]


def load(model: "nn.Module | str | Path | LoadedModel", *, num_labels: int | None = None,
         task: str | None = None, blocks: str | None = None, trust_pickle: bool = False) -> "LoadedModel":
    """The model with a task head and its block stack found, ready for profile_model() and apply().

    `model` is an nn.Module in memory (a transformers base model such as BertModel, or a task model such as
    BertForSequenceClassification, which keeps its own head), a model.pt file, a Hugging Face directory or a
    bundled name; `task` None means the model's own head decides (classification for a bare base model). A module in memory gets the same handling as a file: attention switched to
    eager (the fused SDPA kernel is invisible to FLOP counters) and no KV cache. A LoadedModel passes through.
    """
    from budgetplan.models.load import LoadedModel, load_model

    if isinstance(model, LoadedModel):
        return model
    return load_model(model, num_labels=num_labels, task=task, trust_pickle=trust_pickle, blocks=blocks)


def _shape(sample_batch: Mapping) -> tuple[int, int | None]:
    from budgetplan.errors import ConfigError

    for key in ("input_ids", "pixel_values"):
        if key in sample_batch:
            shape = tuple(sample_batch[key].shape)
            return int(shape[0]), int(shape[1]) if key == "input_ids" else None
    raise ConfigError(f"sample_batch has no input_ids or pixel_values (keys: {', '.join(sample_batch)}); "
                      "pass a batch as your model takes it, or batch_size= and seq_len=")


def profile_model(model, sample_batch: Mapping | None = None, *, batch_size: int = 8, seq_len: int = 128,
            optimizer: str = "adamw", lora_ranks: Sequence[int] = (4, 8, 16), train_embeddings: bool = False,
            measure: bool = True, num_labels: int | None = None, task: str | None = None,
            recompute: bool = True, quantized: bool = True, tick=None) -> "ModelProfile":
    """Measure every block in every state once (FLOPs, saved activations, peak) and compose configurations.

    `sample_batch` (a dict with input_ids or pixel_values) sets the profiled batch size and sequence length
    from its shapes; the costs depend on shapes, not on token values. `measure=False` skips the whole-step
    runs of the standard configurations (their peak is then derived only). `recompute=False` /
    `quantized=False` leave out the +recompute / +int8 states (the CLI's --no-recompute / --no-quantized).
    """
    from budgetplan.profile import profiler

    loaded = load(model, num_labels=num_labels, task=task)
    if sample_batch is not None:
        batch_size, shape_seq = _shape(sample_batch)
        seq_len = shape_seq or seq_len
    request = profiler.ProfileRequest(batch_size=batch_size, seq_len=seq_len, optimizer=optimizer,
                                      lora_ranks=tuple(lora_ranks), train_embeddings=train_embeddings,
                                      measure_configs=measure, recompute=recompute, quantized=quantized)
    return profiler.profile_model(loaded, request, **({"tick": tick} if tick else {}))


def device(spec: DeviceLike, devices_dir: Sequence[str | Path] = ()) -> "DeviceClass":
    """A DeviceClass from a name (bundled or in `devices_dir` / $BUDGETPLAN_DEVICES_DIR), a TOML path, or itself."""
    from budgetplan.devices import DeviceClass, load_device, read_device_file

    if isinstance(spec, DeviceClass):
        return spec
    if isinstance(spec, Path) or str(spec).endswith(".toml"):
        return read_device_file(spec)
    return load_device(str(spec), devices_dir)


def solve_plan(profile: "ModelProfile", devices: "DeviceLike | Sequence[DeviceLike]", *, objective: str = "layers",
          contiguous: bool = False, recompute: bool = True, quantized: bool = True, time_limit_s: float = 10.0,
          seed: int = 0, workers: int = 1, importance: Sequence[float] | None = None,
          devices_dir: Sequence[str | Path] = (), model_spec: str | None = None,
          ladder_rungs: int | None = None) -> "Plan":
    """The plan: per device class the configuration of best objective that fits memory, compute and upload.

    A class that fits nothing is in the plan as inactive (`plan.by_name(n).active is False`), with the least
    budget it needs as `reason`; when no class fits, InfeasibleError says what each needs.
    `recompute=False` keeps the solver off the +recompute states (the CLI's --no-recompute), `quantized=False`
    off the +int8 states (--no-quantized). Each active class carries a ladder of up to `ladder_rungs`
    configurations (default 4; 1: the plan alone) for its clients to fall back to when they have less memory free
    (the CLI's --ladder-rungs).
    """
    from budgetplan.plan import SolverSettings

    many = isinstance(devices, Sequence) and not isinstance(devices, (str, Path))
    classes = [device(d, devices_dir) for d in (devices if many else [devices])]
    settings = SolverSettings(objective, contiguous, time_limit_s, seed, workers, recompute, quantized)
    return plan_for_devices(profile, classes, settings, importance, model_spec, ladder_rungs)


def offered_states(profile: "ModelProfile", settings) -> "ModelProfile":
    """The profile the solver chooses from: without the optional kinds of state the settings turn off (+recompute
    when settings.recompute is False, +int8 when settings.quantized is False; profile.types.OPTIONAL_STATES)."""
    from budgetplan.profile.types import OPTIONAL_STATES, offered

    return offered(profile, **{kind: getattr(settings, kind, True) for kind in OPTIONAL_STATES})


def embedding_offers(profile: "ModelProfile", settings) -> "list[ModelProfile]":
    """The profiles a solve tries, in order of preference: the offered states with full-precision embeddings,
    then, where +int8 states are offered and the profile measured it, the same with the frozen embedding tables
    held in int8 (profile.types.with_int8_embeddings). A later one is used only where it trains strictly more:
    per class in plan_for_devices, for the whole fleet in a fleet solve (best_offer)."""
    from budgetplan.profile.types import with_int8_embeddings

    first = offered_states(profile, settings)
    int8 = with_int8_embeddings(first) if getattr(settings, "quantized", True) else None
    return [first] + ([int8] if int8 is not None else [])


def best_offer(variants: Sequence, solve, score):
    """solve(variant) for each variant in order; the first answer unless a later one scores strictly more."""
    best = best_score = None
    for variant in variants:
        answer = solve(variant)
        value = score(answer)
        if best is None or value > best_score:
            best, best_score = answer, value
    return best


def plan_for_devices(profile: "ModelProfile", devices: Sequence["DeviceClass"], settings, importance=None,
                     model_spec: str | None = None, rungs: int | None = None) -> "Plan":
    """solve_plan() with DeviceClass values and SolverSettings (what `budgetplan solve --device ...` runs).

    Each active class carries a ladder of up to `rungs` configurations (default solve.ladder.LADDER_RUNGS; 1: the
    plan alone) that its clients fall back to when they have less memory free than the class's plan needs."""
    from budgetplan.errors import ConfigError, InfeasibleError
    from budgetplan.plan import build_plan, class_from_solution, inactive_class
    from budgetplan.plan.build import laddered
    from budgetplan.solve.ladder import LADDER_RUNGS

    names = [d.name for d in devices]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice or not devices:
        raise ConfigError(f"device class(es) {', '.join(twice)} given twice; name each class once" if twice else
                          "name at least one device class")
    variants = embedding_offers(profile, settings)
    profile, share = variants[0], 1 / len(devices)
    classes, reasons = [], []
    answers = _device_answers(variants, devices, share, settings, importance)
    for d, ((variant, planner), (solution, reason)) in zip(devices, answers):
        classes.append(inactive_class(profile, d, share, reason) if solution is None else
                       laddered(planner, class_from_solution(variant, solution, d, share), d,
                                LADDER_RUNGS if rungs is None else rungs))
        reasons += [reason] if solution is None else []
    if len(reasons) == len(devices):
        raise InfeasibleError("; ".join(reasons))
    return build_plan(profile, classes, settings, model_spec)


def _device_answers(variants, devices, share: float, settings, importance) -> list:
    """((profile variant, its planner), (solution, reason)) per device. Under `coverage` the classes plan each
    other's coverage on the first variant (solve/coverage.py), and their ladders come from a `layers` planner (a
    rung is the best configuration under a smaller memory cap; coverage weights belong to the plans, not the
    rungs); otherwise each class takes the variant that trains most (best_offer), each variant with one frontier
    for every class, as in a fleet (answers equal solve_device's: tests/test_fleet.py)."""
    from budgetplan.solve.planner import ProfilePlanner

    if settings.objective == "coverage":
        from budgetplan.solve.caps import budget_of
        from budgetplan.solve.coverage import plan_coverage

        answers = plan_coverage(variants[0], list(devices), [share] * len(devices),
                                [budget_of(d) for d in devices], settings.contiguous).answers
        rungs_from = (variants[0], ProfilePlanner(variants[0], "layers", settings.contiguous))
        return [(rungs_from, answer) for answer in answers]
    planners = [(v, ProfilePlanner(v, settings.objective, settings.contiguous, importance)) for v in variants]
    return [best_offer(planners, lambda vp: (vp, vp[1].solve_class(d)), lambda answer: _class_score(answer[1][0]))
            for d in devices]


def fleet_offers(profiles: "Sequence[ModelProfile]", settings) -> "list[list[ModelProfile]]":
    """embedding_offers for a fleet's candidate models: the candidates as offered, then (where any candidate has
    them) the candidates with frozen embeddings held in int8."""
    offers = [embedding_offers(p, settings) for p in profiles]
    int8 = [o[-1] for o in offers]
    return [[o[0] for o in offers]] + ([int8] if any(len(o) > 1 for o in offers) else [])


def solve_fleet_offered(profiles: "Sequence[ModelProfile]", fleet, settings, **options):
    """solve_fleet over fleet_offers: the full-precision embeddings' answer unless the int8 embeddings' answer
    scores strictly more over the fleet (share-weighted objective, then share-weighted trainable parameters)."""
    from budgetplan.errors import InfeasibleError
    from budgetplan.solve import solve_fleet

    def attempt(candidates):
        try:
            return solve_fleet(candidates, fleet, settings.objective, settings.contiguous, settings.time_limit_s,
                               settings.seed, settings.workers, **options)
        except InfeasibleError as exc:
            return exc

    def score(result) -> tuple:
        if isinstance(result, InfeasibleError):
            return (-1.0, 0.0)
        chosen = result.chosen
        params = sum(c.share * s.trainable_params for c, s in zip(fleet.classes, chosen.solutions) if s is not None)
        return (chosen.score, params)

    result = best_offer(fleet_offers(profiles, settings), attempt, score)
    if isinstance(result, InfeasibleError):
        raise result
    return result


def _class_score(solution) -> tuple:
    """How much a class's answer trains: (fits at all, objective value, trainable parameters)."""
    if solution is None:
        return (False, 0, 0)
    return (True, solution.objective_value, getattr(solution, "trainable_params", 0))


def apply(plan: "Plan", model, device_class: str, *, seed: int = 0) -> "PlannedModel":
    """Configure `model` (see load()) in place for one class of the plan and return it ready to train.

    Freezes what the class does not train, injects its LoRA adapters (removing any a previous apply() added),
    and returns a module that an HF Trainer or a plain loop calls as `model(**batch)`: the output has `.loss`
    (when the batch has labels) and `.logits`; `model.trainable_names` is what the class uploads.
    """
    from budgetplan.execute.apply import apply_class

    return apply_class(plan, load(model), device_class, seed=seed)


def layerwise_mean(global_state: "Mapping[str, Tensor]",
                   updates: "Sequence[tuple[Mapping[str, Tensor], int]]") -> "dict[str, Tensor]":
    """Average each tensor over the updates that contain it, weighted by num_examples; others keep the global.

    `updates` holds (uploaded tensors, num_examples) per client, e.g. `(model.upload(), len(data))`.
    """
    from budgetplan.execute.aggregate import layerwise_weighted_mean

    return layerwise_weighted_mean(global_state, updates)


def flower_apps(plan_file: str | Path):
    """(ServerApp, ClientApp) that run the plan in `plan_file` on a Flower grid (needs budgetplan[flower]).

    The server runs budgetplan's round loop with layer-wise aggregation, settings from Flower's run config; each
    client trains its class's configuration. flwr is imported only here, so budgetplan works without it.
    """
    from budgetplan.errors import ExtraMissingError
    from budgetplan.engines import EXTRA_HINT, flower_extra_installed

    if not flower_extra_installed():
        raise ExtraMissingError(EXTRA_HINT)
    from budgetplan.integrations.flower.client import make_client_app
    from budgetplan.integrations.flower.server import make_server_app

    return make_server_app(plan_file), make_client_app(plan_file=plan_file)
