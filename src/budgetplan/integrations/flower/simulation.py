"""`run --engine flower`: the embedded executor's experiment on Flower's simulation engine (Ray backend).

The setup (model, data, partition, class of each client), the run directory, the checkpoint after every
round, server-side evaluation and the round records are the embedded executor's own; only the round loop
is Flower's: the strategy sends plan slices to virtual SuperNodes whose ClientApps train in Ray actors.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from budgetplan.execute import rounds, rundir
from budgetplan.execute.loop import Event, RunState
from budgetplan.execute.rounds import RunConfig, RunResult
from budgetplan.integrations.flower.client import make_client_app
from budgetplan.integrations.flower.server import ENGINE, serve
from budgetplan.integrations.flower.settings import refuse_on_flower
from budgetplan.plan import Plan


@dataclass(frozen=True)
class RayResources:
    """Ray's share of the machine. One CPU per ClientApp: Flower's default of 2 leaves a 2-core box one actor."""

    cpus_per_client: float = 1.0
    cpus_total: int | None = None  # None: every core of the machine
    object_store_bytes: int = 128 * 2**20  # model messages are small; Ray's default reserves 30% of RAM
    logging_level: str = "ERROR"


def backend_config(resources: RayResources) -> dict:
    """Flower's backend_config for the Ray backend."""
    total = resources.cpus_total or os.cpu_count() or 1
    return {"client_resources": {"num_cpus": resources.cpus_per_client, "num_gpus": 0.0},
            "init_args": {"num_cpus": total, "num_gpus": 0, "object_store_memory": resources.object_store_bytes,
                          "logging_level": resources.logging_level, "log_to_driver": False,
                          "include_dashboard": False}}


def run_on_flower(plan: Plan, config: RunConfig, run_dir: str | Path, resume: bool = False,
                  on_event: Event | None = None, *, resources: RayResources = RayResources(),
                  quiet: bool = True) -> RunResult:
    """rounds.run's experiment with Flower's round loop: one virtual SuperNode per client, ClientApps on Ray.

    quiet keeps Flower's own INFO lines out of the console; budgetplan's one-line warnings still show.
    """
    refuse_on_flower(config)
    on_event = on_event or (lambda kind, payload: None)
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # CPU only; silences a Ray notice
    run_dir = Path(run_dir)
    with rundir.locked(run_dir, on_event):
        end = _simulate(plan, config, run_dir, resume, on_event, resources, quiet)
    return RunResult(run_dir, end.history, end.measurements, end.global_state)


def _simulate(plan: Plan, config: RunConfig, run_dir: Path, resume: bool, on_event: Event,
              resources: RayResources, quiet: bool) -> RunState:
    setup, state = rounds.begin(plan, config, run_dir, resume, on_event, engine=ENGINE)
    final: list[RunState] = [state]
    failures: list[BaseException] = []
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        try:
            final.append(serve(grid, setup, state, run_dir, on_event))
        except Exception as exc:  # re-raised below: Flower would only log it, with a traceback
            failures.append(exc)

    if config.rounds > state.round:
        with flower_logs(quiet):
            run_simulation(server_app=server_app, client_app=make_client_app(plan, config),
                           num_supernodes=config.clients, backend_config=backend_config(resources))
    if failures:
        raise failures[0]
    return final[-1]


class _DropNotices(logging.Filter):
    """Flower's INFO progress and its run_simulation deprecation notice; warnings and errors pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and "DEPRECATED FEATURE" not in record.getMessage()


@contextlib.contextmanager
def flower_logs(quiet: bool):
    """Within: Flower's logger shows only warnings (budgetplan's one-line node/reply problems among them)."""
    logger, dropper = logging.getLogger("flwr"), _DropNotices()
    if quiet:
        logger.addFilter(dropper)
    try:
        yield
    finally:
        logger.removeFilter(dropper)
