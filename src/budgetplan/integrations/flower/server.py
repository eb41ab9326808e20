"""The server side of a budgetplan run on a Flower grid, shared by `run --engine flower` and exported apps.

Evaluation, round records and checkpoints are the embedded executor's own: Flower's evaluate_fn hook, called
after every aggregation, evaluates the new global model on the server and writes the round like the
embedded loop does.
"""

from __future__ import annotations

import time
from logging import INFO
from pathlib import Path

from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.supercore import log

from budgetplan.execute import client as client_mod
from budgetplan.execute import rounds
from budgetplan.execute.plans import read_run_plan
from budgetplan.execute.rounds import RunState, Setup
from budgetplan.execute.setup import lora_transposed
from budgetplan.integrations.flower import records as rec
from budgetplan.integrations.flower.identify import PREFIX
from budgetplan.integrations.flower.settings import RUN_DIR, run_config_from_values
from budgetplan.integrations.flower.strategy import LayerwiseStrategy

ENGINE = "flower"


class RoundRecorder:
    """Flower's evaluate_fn: after each round evaluate, record and checkpoint as the embedded loop does."""

    def __init__(self, setup: Setup, strategy: LayerwiseStrategy, run_dir: Path | None, state: RunState,
                 on_event: rounds.Event) -> None:
        self.setup, self.strategy, self.run_dir, self.state, self.on_event = setup, strategy, run_dir, state, on_event

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0:
            return None  # Flower also evaluates the initial model; the embedded loop does not
        round_index = self.strategy.round_offset + server_round
        new_state = rec.to_state(arrays)
        client_mod.load_global(self.setup.template, new_state)
        scores = client_mod.evaluate(self.setup.template, self.setup.dataset.test)
        record = self._record(round_index, scores)
        self.state = RunState(round_index, new_state, [*self.state.history, record], self.state.measurements)
        if self.run_dir is not None:
            rounds.save_checkpoint(self.run_dir, self.state)
        self.on_event("round_end", record)
        return MetricRecord({k: float(v) for k, v in scores.items()})

    def _record(self, round_index: int, scores: dict) -> dict:
        log = self.strategy.rounds[round_index]
        trained = sorted(log.trained, key=lambda t: t["client"])
        dropped = sorted(log.dropped, key=lambda d: d["client"])
        for info in trained + dropped:
            self.on_event("client_done", {"round": round_index, "client": info["client"]})
        measured = self.state.measurements
        return {"round": round_index, "sampled": log.sampled, "trained": trained, "dropped": dropped, **scores,
                "upload_bytes": int(sum(t["upload_bytes"] for t in trained)),
                "flops_planned": rounds._round_flops(self.setup, trained, measured, planned=True),
                "flops_measured": rounds._round_flops(self.setup, trained, measured, planned=False),
                "seconds": time.perf_counter() - log.started_s, "engine": ENGINE}


def make_strategy(setup: Setup, state: RunState, reply_timeout_s: float = 3600.0,
                  on_round_start=None) -> LayerwiseStrategy:
    """The strategy for a prepared run: classes over their measured memory budget sit out, as embedded."""
    blocked = {c.name: reason for c in setup.plan.classes
               if (reason := rounds.over_budget(c, state.measurements.get(c.name)))}
    return LayerwiseStrategy(setup.plan, clients_per_round=setup.config.clients_per_round, seed=setup.config.seed,
                             transposed=lora_transposed(setup.template), blocked_classes=blocked,
                             round_offset=state.round, reply_timeout_s=reply_timeout_s,
                             min_nodes=setup.config.clients, on_round_start=on_round_start)


def serve(grid: Grid, setup: Setup, state: RunState, run_dir: Path | None, on_event: rounds.Event,
          reply_timeout_s: float = 3600.0) -> RunState:
    """Run the remaining rounds of a prepared run on a Flower grid; returns the final state."""
    strategy = make_strategy(setup, state, reply_timeout_s,
                             on_round_start=lambda r, n: on_event("round_start", {"round": r, "clients": n}))
    recorder = RoundRecorder(setup, strategy, run_dir, state, on_event)
    remaining = setup.config.rounds - state.round
    if remaining > 0:
        strategy.start(grid, initial_arrays=rec.to_arrays(state.global_state), num_rounds=remaining,
                       timeout=reply_timeout_s, evaluate_fn=recorder)
    return recorder.state


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
        plan = read_run_plan(plan_file)
        config = run_config_from_values(context.run_config)
        run_dir = Path(str(context.run_config[RUN_DIR])) if context.run_config.get(RUN_DIR) else None
        setup = rounds.prepare(plan, config)
        if run_dir is not None:
            state = rounds.start_or_resume(run_dir, setup, resume=False)
        else:
            state = RunState(0, client_mod.global_state_of(setup.template))
        serve(grid, setup, state, run_dir, log_event)

    return app
