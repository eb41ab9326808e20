"""Helpers for the planner tests: brute force over every state assignment (compose() is the reference), device
classes with exact integer budgets, and a small profile at the scale of the 4-block case of issue 11."""

from __future__ import annotations

import itertools
import random

import numpy as np

from budgetplan.testing import make_profile

from budgetplan.devices import DeviceClass
from budgetplan.errors import ConfigError
from budgetplan.profile.compose import FROZEN, compose, resolve_states
from budgetplan.profile.types import TRAINED, PartCost

FIELDS = ("memory_bytes", "total_memory_bytes", "flops_per_s", "uplink_bits_per_s", "round_deadline_s",
          "upload_time_budget_s", "samples_per_round")


def device(memory: int, flops: int, upload: int, batch: int, name: str = "test-class") -> DeviceClass:
    """A class whose budgets equal the given integers in the planner's units: a 1 s round and upload window,
    samples per round = the profiled batch (so FLOPs per round = FLOPs of one batch), uplink 8 bits per byte."""
    return DeviceClass(name=name, description="test", memory_bytes=memory, total_memory_bytes=memory,
                       flops_per_s=float(flops), uplink_bits_per_s=float(8 * upload), round_deadline_s=1.0,
                       upload_time_budget_s=1.0, samples_per_round=batch,
                       sources=tuple(f"{f}: assumption: test" for f in FIELDS))


def all_configs(profile, contiguous: bool = False) -> list[tuple]:
    """(resolved states, state-index key, ConfigCost) of every valid configuration."""
    order, n = profile.block_state_names, profile.num_blocks
    if contiguous:
        combos = [(FROZEN,) * (n - k) + (TRAINED,) * k for k in range(n + 1)]
    else:
        combos = itertools.product(order, repeat=n)
    configs = []
    for combo in combos:
        try:
            states = resolve_states(combo, profile.context.train_embeddings)
        except ConfigError:
            continue
        configs.append((states, tuple(order.index(s) for s in states), compose(profile, states)))
    return configs


def flops(cost) -> int:
    return cost.flops_forward + cost.flops_backward


def fits(cost, caps) -> bool:
    return cost.peak_bytes_predicted <= caps[0] and flops(cost) <= caps[1] and cost.upload_bytes <= caps[2]


def answer_key(goal, config) -> tuple:
    """The answer order, written out: best objective, then least peak, FLOPs, upload and kept bytes, then the
    first in state order."""
    states, indices, cost = config
    return (-goal.value(states, cost.trainable_params), cost.peak_bytes_predicted, flops(cost), cost.upload_bytes,
            cost.activation_bytes, indices)


def brute_best(configs, goal, caps):
    """The answer by enumeration: the first configuration within caps in the answer order (answer_key); or None."""
    fitting = [c for c in configs if fits(c[2], caps)]
    if not fitting:
        return None
    return min(fitting, key=lambda c: answer_key(goal, c))


class BruteForce:
    """brute_best for many caps over one list of configurations: the configurations sorted once by the
    answer order (answer_key); per caps the first that fits."""

    def __init__(self, configs, goal):
        order = sorted(configs, key=lambda c: answer_key(goal, c))
        self.configs = order
        self.columns = np.array([(c.peak_bytes_predicted, flops(c), c.upload_bytes) for *_, c in order],
                                dtype=object).reshape(-1, 3)

    def best(self, caps):
        """What brute_best(configs, goal, caps) returns."""
        mask = (self.columns <= np.array(caps, dtype=object)).all(axis=1)
        return self.configs[int(np.argmax(mask))] if mask.any() else None


def random_caps(rng: random.Random, configs) -> tuple[int, int, int]:
    def pick(values):
        low, high = min(values), max(values)
        return max(1, rng.randint(low - (high - low) // 20, high + (high - low) // 10))
    return (pick([c.peak_bytes_predicted for _, _, c in configs]), pick([flops(c) for _, _, c in configs]),
            pick([c.upload_bytes for _, _, c in configs]))


def _scaled(cost: PartCost, byte_scale: float, lora_params: int | None) -> PartCost:
    params = cost.trainable_params if lora_params is None or not cost.trainable_params else lora_params
    s = lambda v: int(v * byte_scale)  # noqa: E731
    return PartCost(cost.flops_forward, cost.flops_backward, s(cost.activation_bytes), cost.saves_input,
                    cost.saves_output, {k: s(v) for k, v in cost.shared_saved_bytes.items()},
                    s(cost.forward_extra_bytes), s(cost.backward_extra_bytes), s(cost.step_extra_bytes),
                    cost.param_bytes, params, params * 4, params * 4 * 2)


def small_profile(seed: int):
    """4 blocks x (frozen_outside, frozen_in_path, trained, lora-4) with LoRA training 81 of a block's 200
    parameters (0.405 of a layer) and byte sizes around 10 KB: the scale of issue 11's 4-block case."""
    import dataclasses

    base = make_profile(num_blocks=4, seed=seed, lora_ranks=(4,))
    blocks = []
    for block in base.blocks:
        states = {st: {bd: _scaled(c, 0.25, 81 if st == "lora-4" else (200 if st == TRAINED else None))
                       for bd, c in by.items()} for st, by in block.states.items()}
        blocks.append(dataclasses.replace(block, states=states))
    pre = {st: {bd: _scaled(c, 0.25, None) for bd, c in by.items()} for st, by in base.pre.items()}
    post = {bd: _scaled(c, 0.25, 30) for bd, c in base.post.items()}
    return dataclasses.replace(base, blocks=tuple(blocks), pre=pre, post=post, resident_bytes=3_000,
                               boundary_bytes=base.boundary_bytes // 4)
