"""`budgetplan export --format flower`: a plan as a runnable Flower app (thin command over integrations.flower)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import List, Optional

import typer

from budgetplan.cli import common
from budgetplan.cli import run_options as opts
from budgetplan.errors import ConfigError
from budgetplan.execute.settings import all_settings
from budgetplan.plan import read_plan

FORMATS = ("flower",)


def export_command(
    plan: Path = opts.PLAN,
    out_dir: Path = typer.Argument(..., help="directory to write the app into (empty or new)"),
    fmt: str = typer.Option(..., "--format", help="what to export to: flower"),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="where the server writes rounds and checkpoints"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing app in OUT_DIR"),
    insecure: bool = typer.Option(False, "--insecure", help="no TLS and no SuperNode authentication: for loopback "
                                  "experiments only (default: TLS and registered SuperNode keys)"),
    as_json: bool = typer.Option(False, "--json", help="print the written files as JSON"),
    settings: Optional[dict] = None,  # the run settings' options (run_options.with_run_options), already checked
) -> None:
    """Write a runnable app for another FL framework that runs the plan (flower: `flwr run OUT_DIR`).

    Example: budgetplan export --format flower plan.json app --data drugreview
    """
    from budgetplan.integrations.flower.export import export_flower_app

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: unknown format; use one of: {', '.join(FORMATS)}")
    run_plan = read_plan(plan)
    config = opts.run_config(run_plan, settings, measure=False)
    app = export_flower_app(run_plan, config, out_dir, run_dir, overwrite=force, insecure=insecure)
    if as_json:
        common.echo_json(json.dumps({"app": str(app.root), "files": [str(f) for f in app.files],
                                     "num_supernodes": app.num_supernodes, "insecure": app.insecure}))
        return
    mode = ("INSECURE (no TLS, no node authentication): for loopback experiments only" if app.insecure else
            "TLS and authenticated SuperNodes (start-local.sh makes the CA, certificates and node keys)")
    common.console.print(f"wrote a Flower app to {app.root}, {mode}; run it on this host with:", markup=False,
                         highlight=False, soft_wrap=True)
    root = shlex.quote(str(app.root))
    for line in (f"{root}/start-local.sh", f"FLWR_HOME={root}/.flwr flwr run {root} {app.federation} --stream",
                 f"{root}/start-local.sh --stop"):
        common.console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)


def flower_local_command(
    app_dir: Path = typer.Argument(..., help="an app written by 'budgetplan export --format flower'"),
    port: Optional[int] = typer.Option(None, "--port", help="the SuperLink's port on 127.0.0.1 (default: a free one)"),
    simulation: bool = typer.Option(False, "--simulation", help="start a simulation SuperLink (no SuperNodes)"),
    stop: bool = typer.Option(False, "--stop", help="stop the processes a previous start left running"),
    warm: bool = typer.Option(True, "--warm/--no-warm", help="fork app processes from one warm interpreter (default) "
                              "instead of Flower starting a fresh Python per message"),
    insecure: bool = typer.Option(False, "--insecure", help="no TLS and no SuperNode authentication, for loopback "
                                  "experiments only (also the default of an app exported with --insecure)"),
    host: List[str] = typer.Option([], "--host", help="a further name or address of this host for the SuperLink's "
                                   "certificate (SuperNodes on other hosts dial it); repeatable"),
) -> None:
    """Start (or --stop) a local SuperLink and the app's SuperNodes on 127.0.0.1, in the background.

    Example: budgetplan flower-local app
    """
    from budgetplan.integrations.flower import deploy
    from budgetplan.integrations.flower.export import FEDERATION

    if stop:
        count = deploy.stop_recorded(app_dir)
        common.console.print(f"stopped {count} Flower process group(s) of {app_dir}", markup=False, highlight=False)
        return
    federation = deploy.start_local(app_dir, port=port, simulation=simulation, warm=warm,
                                    insecure=True if insecure else None, hosts=tuple(host))
    kind = "simulation SuperLink" if simulation else f"SuperLink and {len(federation.nodes)} SuperNodes"
    mode = ("INSECURE: no TLS, no node authentication (loopback experiments only)" if federation.insecure else
            f"TLS (CA {federation.certificates.ca_cert}) and registered SuperNode keys")
    root = shlex.quote(str(federation.app))
    common.console.print(f"started a {kind} on 127.0.0.1:{federation.port}, {mode} (logs in "
                         f"{federation.state_dir}); run the app with:", markup=False, highlight=False, soft_wrap=True)
    common.console.print(f"  FLWR_HOME={root}/.flwr flwr run {root} {FEDERATION} --stream",
                         markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    # an app runs every setting with a Flower key; it does not measure (the server holds no device to measure on)
    left_out = ("measure", *(s.name for s in all_settings() if not s.flower_key))
    app.command("export")(common.friendly_errors(opts.with_run_options(export_command, left_out)))
    app.command("flower-local")(common.friendly_errors(flower_local_command))
