"""`budgetplan solve`, `devices` and `plan`: thin commands over budgetplan.solve, budgetplan.devices and budgetplan.plan."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from budgetplan.cli.common import console, friendly_errors
from budgetplan.errors import ConfigError, InfeasibleError
from budgetplan.profile.io import BUNDLED_PROFILE_NAME, profile_path
from budgetplan.profile.io import BUNDLED_PROFILE_PATH as BUNDLED_PROFILE


def _devices(names: list[str], files: list[Path]):
    from budgetplan.devices import load_device, read_device_file

    devices = [load_device(n) for n in names] + [read_device_file(f) for f in files]
    if not devices:
        from budgetplan.devices import list_devices

        known = ", ".join(d.name for d in list_devices())
        raise ConfigError(f"name a device class: --device NAME (known: {known}), --device-file PATH or --fleet FILE")
    seen = set()
    for device in devices:
        if device.name in seen:
            raise ConfigError(f"device class '{device.name}' is given twice; name each class once")
        seen.add(device.name)
    return devices


def _solve_devices(profile, devices, settings, importance):
    from budgetplan.plan import class_from_solution
    from budgetplan.solve.planner import ProfilePlanner

    # one frontier for every class, as in a fleet (answers equal solve_device's: tests/test_fleet.py)
    solver = ProfilePlanner(profile, settings.objective, settings.contiguous, importance)
    planned, failures = [], []
    for device in devices:
        try:
            solution = solver.solve(device)
            planned.append(class_from_solution(profile, solution, device, 1 / len(devices)))
        except InfeasibleError as exc:
            failures.append(str(exc))
    if failures:
        raise InfeasibleError("; ".join(failures))
    return planned


def _limits(fleet, ingress: Optional[float], clients: Optional[int], coverage: Optional[float]):
    """The fleet file's limits with the command line's on top."""
    import dataclasses

    from budgetplan.solve.coupling import FleetLimits

    given = {"ingress_bytes_per_round": ingress, "clients_per_round": clients, "min_coverage": coverage}
    values = {**dataclasses.asdict(fleet.limits), **{k: v for k, v in given.items() if v is not None}}
    return FleetLimits(**values)


def _solve_fleet(fleet_path: Path, profile_paths: list[Path], settings, importance, model_spec, limits: tuple):
    from budgetplan.plan import plan_from_fleet
    from budgetplan.profile.io import read_profile
    from budgetplan.report.progress import counting_bar
    from budgetplan.solve import read_fleet, read_fleet_profiles, solve_fleet

    fleet = read_fleet(fleet_path)
    profiles = [read_profile(p) for p in profile_paths] if profile_paths else read_fleet_profiles(fleet)
    profiles = [offered_states(p, settings) for p in profiles]
    with counting_bar(console, "solving fleet classes") as tick:
        result = solve_fleet(profiles, fleet, settings.objective, settings.contiguous, settings.time_limit_s,
                             settings.seed, settings.workers, importance, progress=tick,
                             limits=_limits(fleet, *limits))
    return plan_from_fleet(result, settings, model_spec)


def offered_states(profile, settings):
    """The profile the solver chooses from: without its +recompute states under --no-recompute."""
    from budgetplan.profile.types import without_recompute

    return profile if settings.recompute else without_recompute(profile)


@friendly_errors
def solve(
    device: List[str] = typer.Option([], "--device", "-d", help="bundled device class (repeat for several)"),
    device_file: List[Path] = typer.Option([], "--device-file", help="your own device class TOML (repeatable)"),
    fleet: Optional[Path] = typer.Option(None, "--fleet", help="fleet TOML: classes with shares and candidate models"),
    profile: List[str] = typer.Option([], "--profile", "-p",
                                      help=f"profile JSON from 'budgetplan profile' (default {BUNDLED_PROFILE_NAME}; "
                                           "with --fleet: the candidate models, overriding the file's)"),
    objective: str = typer.Option("layers", help="layers (trained blocks), params (trainable parameters) or "
                                                 "importance (the profile's measured importance, else --importance weights)"),
    importance: Optional[Path] = typer.Option(None, help="TOML/JSON with weights = [one per block] for --objective importance"),
    contiguous: bool = typer.Option(False, help="only 'last k blocks trained' configurations (the CAFF scheme)"),
    recompute: bool = typer.Option(True, help="let the solver choose activation recomputation per block "
                                              "(trained+recompute, lora-R+recompute: less memory, more FLOPs)"),
    fleet_ingress: Optional[float] = typer.Option(None, "--fleet-ingress",
                                                  help="with --fleet: server ingress per round, bytes"),
    clients_per_round: Optional[int] = typer.Option(None, "--clients-per-round",
                                                    help="with --fleet-ingress: clients sampled per round"),
    min_coverage: Optional[float] = typer.Option(None, "--min-coverage",
                                                 help="with --fleet: least share of a round's clients training "
                                                      "any block that is trained"),
    time_limit: float = typer.Option(10.0, help="CP-SAT time limit (fleet limits only), seconds"),
    seed: int = typer.Option(0, help="CP-SAT random seed"),
    workers: int = typer.Option(1, help="CP-SAT worker threads"),
    model_spec: Optional[str] = typer.Option(None, help="how executors load the model (default: the profile's name)"),
    json_path: Optional[Path] = typer.Option(None, "--json", help="write the plan JSON here"),
) -> None:
    """Choose, per device class, the configuration of best objective that fits memory, compute and upload."""
    from budgetplan.plan import PLAN_SCHEMA_VERSION, SolverSettings, build_plan, write_plan
    from budgetplan.profile.io import read_profile
    from budgetplan.report.solve_report import fleet_table, plan_table
    from budgetplan.solve.objective import read_importance

    from budgetplan.validate import check_options

    check_options({"--time-limit": time_limit, "--seed": seed, "--workers": workers})
    settings = SolverSettings(objective, contiguous, time_limit, seed, workers, recompute)
    weights = read_importance(importance) if importance else None
    paths = [profile_path(p) for p in profile]
    if fleet is not None:
        if device or device_file:
            raise ConfigError("--fleet names its own device classes; drop --device/--device-file")
        plan = _solve_fleet(fleet, paths, settings, weights, model_spec, (fleet_ingress, clients_per_round, min_coverage))
        console.print(fleet_table(plan.fleet))
    else:
        if fleet_ingress is not None or clients_per_round is not None or min_coverage is not None:
            raise ConfigError("--fleet-ingress, --clients-per-round and --min-coverage couple a fleet's classes; "
                              "use them with --fleet")
        if len(paths) > 1:
            raise ConfigError("several --profile candidates need --fleet (one model is chosen for the whole fleet)")
        model = offered_states(read_profile(paths[0] if paths else BUNDLED_PROFILE), settings)
        plan = build_plan(model, _solve_devices(model, _devices(device, device_file), settings, weights), settings,
                          model_spec)
    console.print(plan_table(plan))
    proved = all(c.answer is not None and c.answer.status == "OPTIMAL" for c in plan.classes if c.active)
    console.print("every class solved to proven optimality (OPTIMAL)" if proved else
                  "[yellow]some classes stopped at the time limit (FEASIBLE, not proven best): raise --time-limit[/]")
    if json_path:
        write_plan(plan, json_path)
        console.print(f"plan written to {escape(str(json_path))} (schema {PLAN_SCHEMA_VERSION}; see docs/plan-format.md)")


devices_app = typer.Typer(help="List, show and detect device classes (profiles/*.toml).", no_args_is_help=True)


@devices_app.command("list")
@friendly_errors
def devices_list() -> None:
    """The bundled device classes with their budgets."""
    from budgetplan.devices import list_devices
    from budgetplan.report.device_report import devices_table

    console.print(devices_table(list_devices()))


@devices_app.command("show")
@friendly_errors
def devices_show(
    name: str = typer.Argument(..., help="a bundled device name"),
    device_file: Optional[Path] = typer.Option(None, "--device-file", help="show this file instead"),
) -> None:
    """Every field of one device class with where its number comes from."""
    from budgetplan.devices import load_device, read_device_file
    from budgetplan.report.device_report import device_table

    console.print(device_table(read_device_file(device_file) if device_file else load_device(name)))


@devices_app.command("detect")
@friendly_errors
def devices_detect(
    out: Path = typer.Option(Path("this-machine.toml"), "--out", help="device file to write"),
    name: str = typer.Option("this-machine", help="name of the device class"),
    seconds: float = typer.Option(2.0, help="length of the matmul + backward benchmark"),
) -> None:
    """Measure this machine (memory, sustained FLOP/s) and write a device file; confirm the uplink yourself."""
    from budgetplan.devices import detect_device, write_device_file
    from budgetplan.report.device_report import device_table

    from budgetplan.validate import check_name, check_options

    check_options({"--seconds": seconds})
    check_name(name, "--name", "name the device class with letters, digits and . _ + -")
    with console.status(f"measuring sustained FLOP/s for {seconds:g} s"):
        device = detect_device(name, seconds)
    write_device_file(device, out)
    console.print(device_table(device))
    console.print(f"written to {escape(str(out))}; the uplink is an assumption: measure it and edit uplink_bits_per_s")


plan_app = typer.Typer(help="Show or validate a plan JSON.", no_args_is_help=True)


@plan_app.command("show")
@friendly_errors
def plan_show(plan: Path = typer.Argument(..., help="plan JSON from 'budgetplan solve --json'")) -> None:
    """The plan as a table."""
    from budgetplan.plan import read_plan
    from budgetplan.report.solve_report import plan_table

    console.print(plan_table(read_plan(plan)))


@plan_app.command("validate")
@friendly_errors
def plan_validate(
    plan: Path = typer.Argument(..., help="plan JSON"),
    model: Optional[str] = typer.Option(None, "--model", help="also check the plan was made for this model"),
    trust_pickle: bool = typer.Option(False, help="allow loading a pickled nn.Module"),
) -> None:
    """Check schema version, fields (JSON Schema) and, with --model, the model fingerprint."""
    from budgetplan.files import read_json
    from budgetplan.plan import read_plan

    data = read_plan(plan)
    version = read_json(plan, "plan file", "", ConfigError).get("schema_version")
    line = f"{plan}: valid plan (schema {version}, {len(data.classes)} classes, model {data.model.name})"
    if model:
        from budgetplan.models import load_model

        ctx = data.context
        loaded = load_model(model, num_labels=ctx.num_labels, task=ctx.task, trust_pickle=trust_pickle)
        data.check_model(loaded.fingerprint, model)
        line += f"; matches {model}"
    console.print(escape(line), highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("solve")(solve)
    app.add_typer(devices_app, name="devices")
    app.add_typer(plan_app, name="plan")


__all__ = ["register"]
