"""The server side of a budgetplan run on a Flower grid, shared by `run --engine flower` and exported apps.

The rounds are execute/loop.py's one loop; only its train hook is Flower's (trainer.py). Evaluation, round
records and checkpoints are therefore the embedded engine's own.
"""

from __future__ import annotations

from logging import INFO
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.supercore import log

from budgetplan.execute import client as client_mod
from budgetplan.execute import rounds
from budgetplan.execute.loop import Event, RunState, run_rounds
from budgetplan.execute.rounds import Setup
from budgetplan.integrations.flower.identify import PREFIX
from budgetplan.integrations.flower.settings import RUN_DIR, run_config_from_values
from budgetplan.integrations.flower.trainer import FlowerTrainer
from budgetplan.plan import read_plan

ENGINE = FlowerTrainer.name


def serve(grid: Grid, setup: Setup, state: RunState, run_dir: Path | None, on_event: Event,
          reply_timeout_s: float = 3600.0) -> RunState:
    """Run the remaining rounds of a prepared run on a Flower grid; returns the final state."""
    trainer = FlowerTrainer(grid, setup.plan, min_nodes=setup.config.clients, reply_timeout_s=reply_timeout_s)
    save = None if run_dir is None else (lambda s: rounds.save_checkpoint(run_dir, s))
    return run_rounds(setup, state, trainer, on_event, save)


def log_event(kind: str, payload: dict) -> None:
    """Progress of an exported app's run, as lines in Flower's server log."""
    if kind == "round_end":
        log(INFO, "%s round %d: accuracy %.4f, loss %.4f, %d trained, %d dropped", PREFIX, payload["round"],
            payload["accuracy"], payload["loss"], len(payload["trained"]), len(payload["dropped"]))


def make_server_app(plan_file: str | Path) -> ServerApp:
    """The ServerApp of an exported app: the plan file next to it, run settings from Flower's run config."""
    app = ServerApp()

    @app.main()
    def _main(grid: Grid, context: Context) -> None:
        plan = read_plan(plan_file)
        config = run_config_from_values(context.run_config)
        run_dir = Path(str(context.run_config[RUN_DIR])) if context.run_config.get(RUN_DIR) else None
        setup = rounds.prepare(plan, config)
        if run_dir is not None:
            state = rounds.start_or_resume(run_dir, setup, resume=False)
        else:
            state = RunState(0, client_mod.global_state_of(setup.template))
        serve(grid, setup, state, run_dir, log_event)

    return app
