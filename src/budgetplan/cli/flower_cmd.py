"""`budgetplan export --format flower`: a plan as a runnable Flower app (thin command over integrations.flower)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Optional

import typer

from budgetplan.cli import common
from budgetplan.cli import run_options as opts
from budgetplan.errors import ConfigError
from budgetplan.plan import read_plan

FORMATS = ("flower",)


def export_command(
    plan: Path = opts.PLAN,
    out_dir: Path = typer.Argument(..., help="directory to write the app into (empty or new)"),
    fmt: str = typer.Option(..., "--format", help="what to export to: flower"),
    data: str = opts.DATA,
    rounds: int = opts.ROUNDS,
    clients: int = opts.CLIENTS,
    clients_per_round: Optional[int] = opts.CLIENTS_PER_ROUND,
    local_steps: int = opts.LOCAL_STEPS,
    batch_size: Optional[int] = opts.BATCH_SIZE,
    optimizer: Optional[str] = opts.OPTIMIZER,
    lr: float = opts.LR,
    lora_lr_scale: float = opts.LORA_LR_SCALE,
    head_lr_scale: float = opts.HEAD_LR_SCALE,
    partition: str = opts.PARTITION,
    alpha: float = opts.ALPHA,
    seed: int = opts.SEED,
    seq_len: Optional[int] = opts.SEQ_LEN,
    data_dir: Optional[str] = opts.DATA_DIR,
    max_train: Optional[int] = opts.MAX_TRAIN,
    max_test: Optional[int] = opts.MAX_TEST,
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="where the server writes rounds and checkpoints"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing app in OUT_DIR"),
    as_json: bool = typer.Option(False, "--json", help="print the written files as JSON"),
) -> None:
    """Write a runnable app for another FL framework that runs the plan (flower: `flwr run OUT_DIR`).

    Example: budgetplan export --format flower plan.json app --data drugreview
    """
    from budgetplan.integrations.flower.export import export_flower_app

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: unknown format; use one of: {', '.join(FORMATS)}")
    run_plan = read_plan(plan)
    config = opts.run_config(
        run_plan, data=data, rounds=rounds, clients=clients, clients_per_round=clients_per_round,
        local_steps=local_steps, batch_size=batch_size, optimizer=optimizer, lr=lr, partition=partition, alpha=alpha,
        seed=seed, seq_len=seq_len, data_dir=data_dir, max_train=max_train, max_test=max_test, measure=False,
        lora_lr_scale=lora_lr_scale, head_lr_scale=head_lr_scale)
    app = export_flower_app(run_plan, config, out_dir, run_dir, overwrite=force)
    if as_json:
        common.echo_json(json.dumps({"app": str(app.root), "files": [str(f) for f in app.files],
                                     "num_supernodes": app.num_supernodes}))
        return
    common.console.print(f"wrote a Flower app to {app.root}; run it on this host with:", markup=False,
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
    federation = deploy.start_local(app_dir, port=port, simulation=simulation, warm=warm)
    kind = "simulation SuperLink" if simulation else f"SuperLink and {len(federation.nodes)} SuperNodes"
    root = shlex.quote(str(federation.app))
    common.console.print(f"started a {kind} on 127.0.0.1:{federation.port} (logs in {federation.state_dir}); "
                         "run the app with:", markup=False, highlight=False, soft_wrap=True)
    common.console.print(f"  FLWR_HOME={root}/.flwr flwr run {root} {FEDERATION} --stream",
                         markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("export")(common.friendly_errors(export_command))
    app.command("flower-local")(common.friendly_errors(flower_local_command))
