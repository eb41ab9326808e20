"""The server side of a budgetplan run on a Flower grid, shared by `run --engine flower` and exported apps.

The rounds are execute/loop.py's one loop; only its train hook is Flower's (trainer.py). Evaluation, round
records and checkpoints are therefore the embedded engine's own.
"""

from __future__ import annotations

import contextlib
import logging
from logging import ERROR, INFO
from pathlib import Path

from flwr.app import Context
from flwr.app.exception import AppExitException
from flwr.serverapp import Grid, ServerApp
from flwr.supercore import log
from flwr.supercore.exit import ExitCode

from budgetplan.errors import BudgetplanError, ConfigError
from budgetplan.execute import client as client_mod
from budgetplan.execute import rounds, rundir
from budgetplan.execute.loop import Event, RunState, run_rounds
from budgetplan.execute.records import RoundRecord
from budgetplan.execute.rounds import Setup
from budgetplan.integrations.flower import setups
from budgetplan.integrations.flower.identify import PREFIX
from budgetplan.integrations.flower.settings import (NODE_WAIT_DEFAULT_S, NODE_WAIT_S, REPLY_TIMEOUT_DEFAULT_S,
                                                     REPLY_TIMEOUT_S, RESUME, RUN_DIR, run_config_from_values)
from budgetplan.integrations.flower.trainer import FlowerTrainer
from budgetplan.plan import read_plan

ENGINE = FlowerTrainer.name


def serve(grid: Grid, setup: Setup, state: RunState, run_dir: Path | None, on_event: Event,
          reply_timeout_s: float = 3600.0, node_wait_s: float = 0.0) -> RunState:
    """Run the remaining rounds of a prepared run on a Flower grid; returns the final state."""
    trainer = FlowerTrainer(grid, setup.plan, min_nodes=setup.config.clients, reply_timeout_s=reply_timeout_s,
                            node_wait_s=node_wait_s, base_state=client_mod.global_state_of(setup.template))
    save = None if run_dir is None else (lambda s: rounds.save_checkpoint(run_dir, s))
    return run_rounds(setup, state, trainer, on_event, save)


def log_event(kind: str, payload: dict) -> None:
    """Progress of an exported app's run, as lines in Flower's server log."""
    if kind == "round_end":
        record: RoundRecord = payload
        log(INFO, "%s round %d: accuracy %.4f, loss %.4f, %d trained, %d dropped", PREFIX, record.round,
            record.accuracy, record.loss, len(record.trained), len(record.dropped))


class DeployedRunError(AppExitException):
    """A budgetplan error in an exported app's ServerApp: logged in one line, the run ends as failed."""

    exit_code = ExitCode.SERVERAPP_EXCEPTION


class _NoTraceback(logging.Filter):
    """Flower logs a ServerApp's exception with its traceback; a DeployedRunError was already said in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], DeployedRunError):
            record.exc_info, record.exc_text = None, None
        return True


def run_deployed(grid: Grid, values: dict, plan_file: str | Path) -> RunState:
    """An exported app's run: plan file, run config (run-dir, resume, timeouts), then the remaining rounds.

    The run dir is owned for the whole run as by the embedded engine (rundir.locked): a second run on the same
    run dir, deployed or embedded, is refused with one line naming the owner.
    """
    plan = read_plan(plan_file)
    config = run_config_from_values(values)
    run_dir = Path(str(values[RUN_DIR])) if values.get(RUN_DIR) else None
    resume = bool(values.get(RESUME, False))
    if resume and run_dir is None:
        raise ConfigError("resume=true needs a run-dir in the run config; export with --run-dir or pass "
                          "--run-config 'run-dir=\"PATH\"'")
    with contextlib.nullcontext() if run_dir is None else rundir.locked(run_dir):
        if run_dir is not None and not resume and (run_dir / rounds.CHECKPOINT).exists():
            raise ConfigError(f"run-dir {run_dir} already holds a run; continue it with --run-config "
                              "'resume=true' or give another run-dir")
        setup = setups.prepared(plan, config)
        if run_dir is not None:
            state = rounds.start_or_resume(run_dir, setup, resume=resume)
        else:
            state = RunState(0, client_mod.global_state_of(setup.template))
        if state.round >= config.rounds:
            log(INFO, "%s %s already holds all %d rounds; nothing to do", PREFIX, run_dir, config.rounds)
            return state
        return serve(grid, setup, state, run_dir, log_event,
                     reply_timeout_s=float(values.get(REPLY_TIMEOUT_S, REPLY_TIMEOUT_DEFAULT_S)),
                     node_wait_s=float(values.get(NODE_WAIT_S, NODE_WAIT_DEFAULT_S)))


def make_server_app(plan_file: str | Path) -> ServerApp:
    """The ServerApp of an exported app: the plan file next to it, run settings from Flower's run config.

    A budgetplan error (bad settings, a run dir that already holds a run, ...) is one ERROR line in the
    server log and a failed run (the flwr-serverapp process exits non-zero), not a traceback.
    """
    app = ServerApp()
    logging.getLogger("flwr").addFilter(_NoTraceback())

    @app.main()
    def _main(grid: Grid, context: Context) -> None:
        main(grid, dict(context.run_config), plan_file)

    return app


def main(grid: Grid, values: dict, plan_file: str | Path) -> RunState:
    """run_deployed, with a budgetplan error logged in one line and re-raised as a DeployedRunError."""
    try:
        return run_deployed(grid, values, plan_file)
    except BudgetplanError as exc:
        message = " ".join(str(exc).split("\n"))
        log(ERROR, "%s error: %s", PREFIX, message)
        raise DeployedRunError(message) from None
