"""Device-aware rounds: before each round a client measures what it has and picks the rung of its class's ladder
(plan/types.py `PlanClass.ladder`; rung 0 is the class's plan) that it trains.

A rung fits when its predicted peak x (1 + memory_margin) is at most the memory free now and, with a round deadline,
its predicted FLOPs for the round finish in time at the device file's flops_per_s. The client trains the first rung
that fits (the ladder runs from the largest peak down); when none does it sits the round out and says why.
The embedded engine and the Flower ClientApp call the same `choose_rung`.

Free memory is measured (NVML for a CUDA device, else psutil: devices.free_memory) unless the run simulates it:
`free_memory_schedule` gives named clients MiB per round, `free_memory_jitter` j gives every other client its
class's memory budget x U(1 - j, 1 + j), drawn from (seed, round, client) so a resumed run and both engines see the
same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from budgetplan.devices import free_memory
from budgetplan.execute.settings import MIB, RunConfig, memory_schedule
from budgetplan.plan import PlanClass

MEMORY_STREAM = 13  # simulated free memory is drawn from default_rng([seed, round, client, MEMORY_STREAM])
SIMULATED = "simulated"


@dataclass(frozen=True)
class Resources:
    """What a client has for this round: free memory (measured or simulated) and the round's deadline."""

    free_memory_bytes: int
    source: str  # "measured: ..." or "simulated"
    deadline_s: float | None = None


@dataclass(frozen=True)
class RungChoice:
    """The rung a client trains this round (None: it sits out), and one line saying why."""

    rung: int | None
    reason: str


def simulated(config: RunConfig) -> bool:
    return config.free_memory_jitter > 0 or config.free_memory_schedule is not None


def resources_of(config: RunConfig, plan_class: PlanClass, round_index: int, client: int,
                 device: str = "cpu") -> Resources:
    """This client's resources for the round: simulated when the run asks for it, else measured here."""
    schedule = memory_schedule(config.free_memory_schedule) if config.free_memory_schedule else {}
    if client in schedule:
        values = schedule[client]
        return Resources(values[min(round_index, len(values)) - 1], SIMULATED, config.round_deadline_s)
    budget = plan_class.budget
    if config.free_memory_jitter > 0 and budget is not None:
        rng = np.random.default_rng([config.seed, round_index, client, MEMORY_STREAM])
        factor = 1 + config.free_memory_jitter * (2 * rng.random() - 1)
        return Resources(int(budget.memory_bytes * factor), SIMULATED, config.round_deadline_s)
    free, source = free_memory(device)
    return Resources(free, source, config.round_deadline_s)


def rung_seconds(plan_class: PlanClass, local_steps: int) -> float | None:
    """Predicted seconds of a round's local steps at the device's flops_per_s (derived), or None when unknown."""
    flops_per_s = (plan_class.device or {}).get("flops_per_s")
    if plan_class.predicted is None or not flops_per_s:
        return None
    return plan_class.predicted.flops_per_step * local_steps / flops_per_s


def choose_rung(plan_class: PlanClass, resources: Resources, margin: float, local_steps: int,
                ladder: bool = True) -> RungChoice:
    """The highest rung (the first in ladder order) that fits `resources`; rung 0 only when not `ladder`."""
    free = resources.free_memory_bytes
    need = "the class trains nothing"
    for rung in range(plan_class.rungs if ladder else min(plan_class.rungs, 1)):
        step = plan_class.at_rung(rung)
        peak = None if step.predicted is None else step.predicted.peak_bytes
        seconds = None if resources.deadline_s is None else rung_seconds(step, local_steps)
        memory_ok = peak is None or peak * (1 + margin) <= free
        if memory_ok and (seconds is None or seconds <= resources.deadline_s):
            return RungChoice(rung, f"rung {rung}: {free / MIB:.1f} MiB free ({resources.source})")
        need = (f"rung {rung} needs {peak * (1 + margin) / MIB:.1f} MiB (predicted peak + {margin:.0%} margin)"
                if not memory_ok else f"rung {rung} needs {seconds:.1f} s > the {resources.deadline_s:g} s deadline")
    kind = "lowest rung" if ladder else "plan (--no-ladder)"
    return RungChoice(None, f"sat out: {free / MIB:.1f} MiB free ({resources.source}); its {kind}: {need}")
