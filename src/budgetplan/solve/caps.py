"""A device class's three budgets as exact integers, and the one place FLOPs per round are defined.

Integer scaling: bytes and FLOPs are counted in units of one (the profile's integers are exact, so the
constraints are too); uplink bits become bytes by BITS_PER_BYTE; float device figures are floored, so a
budget is never rounded up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

BITS_PER_BYTE = 8

MEMORY = "memory"
COMPUTE = "compute"
UPLOAD = "upload"
BUDGET_NAMES = (MEMORY, COMPUTE, UPLOAD)
BUDGET_UNITS = {MEMORY: "bytes", COMPUTE: "FLOP per round", UPLOAD: "bytes per round"}


@dataclass(frozen=True)
class Budget:
    """What one device class allows per round. Every field is > 0."""

    memory_bytes: int
    flops_per_round: int  # floor(sustained FLOP/s x round deadline)
    upload_bytes_per_round: int  # floor(uplink bits/s x upload time budget / 8)
    samples_per_round: int

    def limit(self, name: str) -> int:
        return {MEMORY: self.memory_bytes, COMPUTE: self.flops_per_round, UPLOAD: self.upload_bytes_per_round}[name]


def budget_of(device) -> Budget:
    """The integer budgets of a DeviceClass (see budgetplan.devices)."""
    return Budget(
        memory_bytes=int(device.memory_bytes),
        flops_per_round=math.floor(device.flops_per_s * device.round_deadline_s),
        upload_bytes_per_round=math.floor(device.uplink_bits_per_s * device.upload_time_budget_s / BITS_PER_BYTE),
        samples_per_round=int(device.samples_per_round),
    )


def flops_per_round(flops_per_step: int, samples_per_round: int, batch_size: int) -> int:
    """FLOPs per round = (forward + backward FLOPs of one profiled batch) / batch size x samples, rounded up.

    The solver states `flops_per_step x samples <= budget x batch_size`, which holds exactly when this
    ceiling is <= budget (for integers a, b > 0: ceil(a / b) <= B iff a <= B x b).
    """
    return -(-flops_per_step * samples_per_round // batch_size)


def step_flops_cap(budget: Budget, batch_size: int) -> int:
    """The largest FLOPs of one profiled batch whose FLOPs per round fit: a x s <= B x b iff a <= floor(B x b / s)."""
    return budget.flops_per_round * batch_size // budget.samples_per_round


def format_quantity(name: str, value: int) -> str:
    """A budget quantity for people: decimal megabytes for bytes, TFLOP / GFLOP for FLOPs."""
    if name == COMPUTE:
        return f"{value / 1e12:.4g} TFLOP per round" if value >= 1e12 else f"{value / 1e9:.4g} GFLOP per round"
    text = f"{value / 1e6:.4g} MB" if value >= 1e5 else f"{value} bytes"
    return text + (" per round" if name == UPLOAD else "")
