"""`budgetplan solve`, `devices` and `plan`: thin commands over budgetplan.solve, budgetplan.devices and budgetplan.plan."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.markup import escape

from budgetplan.cli.common import JSON_HELP, console, friendly_errors, json_output, write_json
from budgetplan.cli.run_options import with_recipe_options
from budgetplan.errors import ConfigError
from budgetplan.profile.io import BUNDLED_PROFILE_NAME, profile_path
from budgetplan.profile.io import BUNDLED_PROFILE_PATH as BUNDLED_PROFILE


EXIT_SAT_OUT = 3  # the plan is written, but at least one device class fits nothing and sits out
DEVICES_DIR = typer.Option([], "--devices-dir", envvar="BUDGETPLAN_DEVICES_DIR", show_envvar=True,
                           help="a folder of your own device TOML files, searched before the bundled classes "
                                "(repeatable; the environment variable takes several joined with ':')")


def _devices(names: list[str], files: list[Path], dirs: list[Path]):
    from budgetplan.devices import list_devices, load_device, read_device_file

    devices = [load_device(n, dirs) for n in names] + [read_device_file(f) for f in files]
    if not devices:
        known = ", ".join(d.name for d in list_devices(dirs))
        raise ConfigError(f"name a device class: --device NAME (known: {known}), --device-file PATH or --fleet FILE")
    seen = set()
    for device in devices:
        if device.name in seen:
            raise ConfigError(f"device class '{device.name}' is given twice; name each class once")
        seen.add(device.name)
    return devices


def _solve_devices(profile, devices, settings, importance, model_spec, rungs: int = 4):
    """The plan for named classes; one that fits nothing sits out with the least budget it needs as reason."""
    from budgetplan.api import plan_for_devices

    names = ", ".join(d.name for d in devices)
    with console.status(f"planning {escape(names)} on {escape(profile.model.name)} ({profile.num_blocks} blocks)"):
        return plan_for_devices(profile, devices, settings, importance, model_spec, rungs)


def _limits(fleet, ingress: Optional[float], clients: Optional[int], coverage: Optional[float]):
    """The fleet file's limits with the command line's on top."""
    import dataclasses

    from budgetplan.solve.coupling import FleetLimits

    given = {"ingress_bytes_per_round": ingress, "clients_per_round": clients, "min_coverage": coverage}
    values = {**dataclasses.asdict(fleet.limits), **{k: v for k, v in given.items() if v is not None}}
    return FleetLimits(**values)


def _solve_fleet(fleet_spec: str, profile_paths: list[Path], settings, importance, dirs: list[Path], model_spec,
                 limits: tuple, rungs: int = 4):
    from budgetplan.api import solve_fleet_offered
    from budgetplan.plan import plan_from_fleet
    from budgetplan.profile.io import read_profile
    from budgetplan.report.console import counting_bar
    from budgetplan.solve import read_fleet, read_fleet_profiles, solve_fleet

    fleet = read_fleet(fleet_spec, dirs)
    profiles = [read_profile(p) for p in profile_paths] if profile_paths else read_fleet_profiles(fleet)
    with counting_bar(console, "solving fleet classes") as tick:
        result = solve_fleet_offered(profiles, fleet, settings, importance=importance, progress=tick,
                                     limits=_limits(fleet, *limits))
    return plan_from_fleet(result, settings, model_spec, rungs)


def _summary(plan) -> list[str]:
    proved = all(c.answer is not None and c.answer.status == "OPTIMAL" for c in plan.classes if c.active)
    lines = ["every class solved to proven optimality (OPTIMAL)" if proved
             else "[yellow]some classes stopped at the time limit (FEASIBLE, not proven best): raise --time-limit[/]"]
    out, chosen = _sat_out(plan), [c.name for c in plan.classes if _left_out_by_limits(c)]
    if out:
        lines.append(f"[yellow]{len(out)} class(es) sit out, nothing fits: {escape(', '.join(out))} (exit code "
                     f"{EXIT_SAT_OUT}); the plan covers the others[/]")
    if chosen:
        lines.append(f"{len(chosen)} class(es) sit out to meet the fleet limits: {escape(', '.join(chosen))}")
    return lines


def _left_out_by_limits(c) -> bool:
    """Inactive although it fits its own budgets: the fleet-wide limits left it out (a choice, not a failure)."""
    from budgetplan.solve.fleet import LIMITS_REASON

    return not c.active and LIMITS_REASON in (c.reason or "")


def _sat_out(plan) -> list[str]:
    """The classes that fit nothing (exit code 3)."""
    return [c.name for c in plan.classes if not c.active and not _left_out_by_limits(c)]


def solve(
    device: List[str] = typer.Option([], "--device", "-d", help="bundled device class (repeat for several)"),
    device_file: List[Path] = typer.Option([], "--device-file", help="your own device class TOML (repeatable)"),
    devices_dir: List[Path] = DEVICES_DIR,
    fleet: Optional[str] = typer.Option(None, "--fleet", help="fleet TOML (classes with shares and candidate "
                                                              "models), or a bundled fleet: demo, mixed-edge"),
    profile: List[str] = typer.Option([], "--profile", "-p",
                                      help=f"profile JSON from 'budgetplan profile' (default {BUNDLED_PROFILE_NAME}; "
                                           "with --fleet: the candidate models, overriding the file's)"),
    objective: str = typer.Option("layers", help="layers (trained blocks), params (trainable parameters), "
                                                 "importance (the profile's measured importance, else --importance "
                                                 "weights) or coverage (layers x the share of a round's samples "
                                                 "that train each block; with --fleet)"),
    importance: Optional[Path] = typer.Option(None, help="TOML/JSON with weights = \\[one per block] for --objective importance"),
    contiguous: bool = typer.Option(False, help="only 'last k blocks trained' configurations (the CAFF scheme)"),
    recompute: bool = typer.Option(True, help="let the solver choose activation recomputation per block "
                                              "(trained+recompute, lora-R+recompute: less memory, more FLOPs)"),
    quantized: bool = typer.Option(True, help="let the solver hold frozen weights in int8 per block "
                                              "(frozen+int8, lora-R+int8: less memory, a dequantisation per weight)"),
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
    ladder_rungs: int = typer.Option(4, "--ladder-rungs", help="configurations per class, the plan first, then the "
                                     "best under smaller memory caps, that a client falls back to when it has less "
                                     "free (1: the plan alone)"),
    json_path: Optional[Path] = typer.Option(None, "--json", help=JSON_HELP.format(what="plan")),
    recipe=None,  # the plan's training recipe from the --server-optimizer, --aggregation-weights, ... options
) -> None:
    """Choose, per device class, the configuration of best objective that fits memory, compute and upload.

    A class that fits nothing sits out: the table names the least budget it needs, the plan covers the other
    classes, and the exit code is 3 (0: every class has a plan, or sits out only to meet --fleet-ingress /
    --min-coverage; 2: bad input, or no class fits at all).

    The recipe options (--server-optimizer, --aggregation-weights, --lr, ...) write the plan's training recipe,
    which run, export and Flower apps take as their default.

    Example: budgetplan solve --device jetson-nano --device raspberry-pi-zero-2w --json plan.json
    """
    import dataclasses

    from budgetplan.plan import PLAN_SCHEMA_VERSION, write_plan
    from budgetplan.report.planning import plan_table

    with json_output(json_path):
        plan = _make_plan(device, device_file, devices_dir, fleet, profile, objective, importance, contiguous,
                          (recompute, quantized), time_limit, seed, workers, model_spec,
                          (fleet_ingress, clients_per_round, min_coverage), ladder_rungs)
        if recipe is not None:
            plan = dataclasses.replace(plan, recipe=recipe)
        console.print(plan_table(plan))
        for line in _summary(plan):
            console.print(line, highlight=False)
        if json_path:
            write_json(write_plan, plan, json_path, f"plan (schema {PLAN_SCHEMA_VERSION}; docs/plan-format.md)")
    if _sat_out(plan):
        raise typer.Exit(EXIT_SAT_OUT)


def _make_plan(device, device_file, devices_dir, fleet, profile, objective, importance, contiguous, offers: tuple,
               time_limit, seed, workers, model_spec, limits: tuple,
               rungs: int = 4):
    """offers: (recompute, quantized), the optional kinds of state offered to the solver."""
    from budgetplan.plan import SolverSettings
    from budgetplan.profile.io import read_profile
    from budgetplan.report.planning import fleet_table
    from budgetplan.solve.objective import read_importance

    from budgetplan.validate import check_options

    check_options({"--time-limit": time_limit, "--seed": seed, "--workers": workers, "--ladder-rungs": rungs})
    settings = SolverSettings(objective, contiguous, time_limit, seed, workers, *offers)
    weights = read_importance(importance) if importance else None
    paths = [profile_path(p) for p in profile]
    if fleet is not None:
        if device or device_file:
            raise ConfigError("--fleet names its own device classes; drop --device/--device-file")
        plan = _solve_fleet(fleet, paths, settings, weights, devices_dir, model_spec, limits, rungs)
        console.print(fleet_table(plan.fleet))
        return plan
    if any(v is not None for v in limits):
        raise ConfigError("--fleet-ingress, --clients-per-round and --min-coverage couple a fleet's classes; "
                          "use them with --fleet")
    if len(paths) > 1:
        raise ConfigError("several --profile candidates need --fleet (one model is chosen for the whole fleet)")
    model = read_profile(paths[0] if paths else BUNDLED_PROFILE)  # --no-recompute/--no-quantized: plan_for_devices
    devices = _devices(device, device_file, devices_dir)
    return _solve_devices(model, devices, settings, weights, model_spec, rungs)


devices_app = typer.Typer(help="List, show and detect device classes (bundled, or your own TOML files).\n\n"
                               "Example: budgetplan devices list",
                          no_args_is_help=True)


@devices_app.command("list")
@friendly_errors
def devices_list(devices_dir: List[Path] = DEVICES_DIR) -> None:
    """The device classes with their budgets (bundled, and yours from --devices-dir / BUDGETPLAN_DEVICES_DIR),
    and the bundled fleets.

    Example: budgetplan devices list --devices-dir ./my-boards
    """
    from budgetplan.devices import BUNDLED_DIR, bundled_fleets, fleet_file, list_devices
    from budgetplan.report.planning import devices_table, fleets_line
    from budgetplan.solve import read_fleet

    console.print(devices_table(list_devices(devices_dir), BUNDLED_DIR))
    console.print(fleets_line([read_fleet(fleet_file(name), devices_dir) for name in bundled_fleets()]),
                  highlight=False)


@devices_app.command("show")
@friendly_errors
def devices_show(
    name: str = typer.Argument(..., help="a device class name (see 'budgetplan devices list')"),
    device_file: Optional[Path] = typer.Option(None, "--device-file", help="show this file instead"),
    devices_dir: List[Path] = DEVICES_DIR,
) -> None:
    """Every field of one device class with where its number comes from.

    Example: budgetplan devices show raspberry-pi-zero-2w
    """
    from budgetplan.devices import load_device, read_device_file
    from budgetplan.report.planning import device_table

    console.print(device_table(read_device_file(device_file) if device_file else load_device(name, devices_dir)))


@devices_app.command("detect")
@friendly_errors
def devices_detect(
    out: Path = typer.Option(Path("this-machine.toml"), "--out", help="device file to write"),
    name: str = typer.Option("this-machine", help="name of the device class"),
    seconds: float = typer.Option(2.0, help="length of the matmul + backward benchmark"),
) -> None:
    """Measure this machine (memory, sustained FLOP/s) and write a device file; confirm the uplink yourself.

    Example: budgetplan devices detect --name my-board --out my-board.toml
    """
    from budgetplan.devices import detect_device, write_device_file
    from budgetplan.report.planning import device_table

    from budgetplan.validate import check_name, check_options

    check_options({"--seconds": seconds})
    check_name(name, "--name", "name the device class with letters, digits and . _ + -")
    with console.status(f"measuring sustained FLOP/s for {seconds:g} s"):
        device = detect_device(name, seconds)
    write_device_file(device, out)
    console.print(device_table(device))
    console.print(f"written to {escape(str(out))}; the uplink is an assumption: measure it and edit uplink_bits_per_s")


plan_app = typer.Typer(help="Show or validate a plan JSON.\n\nExample: budgetplan plan show plan.json",
                       no_args_is_help=True)


@plan_app.command("show")
@friendly_errors
def plan_show(plan: Path = typer.Argument(..., help="plan JSON from 'budgetplan solve --json'")) -> None:
    """The plan as a table.

    Example: budgetplan plan show plan.json
    """
    from budgetplan.plan import read_plan
    from budgetplan.report.planning import plan_table

    console.print(plan_table(read_plan(plan)))


@plan_app.command("validate")
@friendly_errors
def plan_validate(
    plan: Path = typer.Argument(..., help="plan JSON"),
    model: Optional[str] = typer.Option(None, "--model", help="also check the plan was made for this model"),
    trust_pickle: bool = typer.Option(False, help="allow loading a pickled nn.Module"),
) -> None:
    """Check schema version, fields (JSON Schema) and, with --model, the model fingerprint.

    Example: budgetplan plan validate plan.json --model model.pt
    """
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
    app.command("solve")(friendly_errors(with_recipe_options(solve)))
    app.add_typer(devices_app, name="devices")
    app.add_typer(plan_app, name="plan")


__all__ = ["register"]
