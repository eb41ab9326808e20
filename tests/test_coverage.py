"""The fleet-aware objective `coverage`: weights follow the share of a round's samples that train a block, plans
move toward the common core, the planner still equals brute force, and a fleet is planned to a fixed point."""

from __future__ import annotations

import random

import pytest
from budgetplan.testing import make_profile
from solve_helpers import BruteForce, all_configs, device

from budgetplan.api import plan_for_devices
from budgetplan.errors import ConfigError
from budgetplan.plan.types import SolverSettings
from budgetplan.profile.compose import compose
from budgetplan.profile.types import TRAINED, is_trainable
from budgetplan.solve import Fleet, FleetClass, FleetLimits, ProfilePlanner, solve_fleet
from budgetplan.solve.caps import budget_of
from budgetplan.solve.coverage import block_coverage, plan_coverage, samples_per_round
from budgetplan.solve.objective import LAYERS, make_objective

BIG = 10**12  # unbinding FLOPs and upload, within the physical bounds devices are read with (uplink <= 10 Tbit/s)


def memory_device(profile, fraction: float, name: str = "c", samples: int = 8):
    """A class whose memory is head-only's peak plus `fraction` of the way to full fine-tuning's."""
    full = compose(profile, (TRAINED,) * profile.num_blocks).peak_bytes_predicted
    head = compose(profile, ("frozen_outside",) * profile.num_blocks).peak_bytes_predicted
    d = device(int(head + fraction * (full - head)), BIG, BIG, samples, name=name)
    return d


def test_block_coverage_counts_the_classes_that_train_a_block():
    weight = [0.6, 0.3, 0.1]  # shares of a round's samples
    trains = [(False, True, True), (False, False, True), None]  # class 2 sits out
    # class 2 training block 0 would be alone there: its own 0.1; block 2 is the common core of 0 and 1.
    assert block_coverage(2, weight, trains, 3) == (0.1, 0.7, 1.0)
    # class 1's own plan is not counted twice: it is replaced by its own weight.
    assert block_coverage(1, weight, trains, 3) == (0.3, 0.9, 0.9)


def test_samples_per_round_weights_share_by_samples():
    profile = make_profile(num_blocks=2)
    a, b = memory_device(profile, 0.5, "a", samples=8), memory_device(profile, 0.5, "b", samples=24)
    assert samples_per_round([0.5, 0.5], [a, b]) == [0.25, 0.75]  # 0.5 x 8 : 0.5 x 24


def test_coverage_weights_a_lonely_block_below_the_common_core():
    profile = make_profile(num_blocks=3, lora_ranks=(4,), seed=2)
    goal = make_objective("coverage", profile, (0.2, 1.0, 1.0))
    layers = make_objective(LAYERS, profile)
    assert goal.state_weights[0][TRAINED] < goal.state_weights[1][TRAINED] == layers.state_weights[1][TRAINED]
    assert goal.state_weights[0][TRAINED] == round(0.2 * layers.state_weights[0][TRAINED])
    # no fleet: coverage 1 everywhere is `layers`
    assert make_objective("coverage", profile).state_weights == layers.state_weights
    for bad in ((0.5, 0.5), (1.5, 1.0, 1.0), (-0.1, 1.0, 1.0)):
        with pytest.raises(ConfigError, match="one share in \\[0, 1\\] per block"):
            make_objective("coverage", profile, bad)


def test_coverage_moves_plans_toward_the_common_core():
    """Against `layers`, a coverage plan never trains less of the well-covered blocks nor more of the others
    (measured in `layers` weights), and on some budgets it does change the plan."""
    changed = 0
    for seed in range(6):
        profile = make_profile(num_blocks=5, lora_ranks=(4,), seed=seed)
        rng = random.Random(seed)
        core = set(rng.sample(range(5), 2))
        coverage = tuple(1.0 if b in core else 0.25 for b in range(5))
        layers, covered = ProfilePlanner(profile), ProfilePlanner(profile, "coverage", importance=coverage)
        weights = layers.goal.state_weights

        def mass(states, inside):
            return sum(weights[b].get(s, 0) for b, s in enumerate(states) if (b in core) == inside)

        for _ in range(20):
            d = memory_device(profile, rng.random() * 1.1)
            a = layers.solve_classes([d], [budget_of(d)])[0][0]
            c = covered.solve_classes([d], [budget_of(d)])[0][0]
            if a is None or a.block_states == c.block_states:
                continue
            changed += 1
            assert mass(c.block_states, True) >= mass(a.block_states, True)
            assert mass(c.block_states, False) <= mass(a.block_states, False)
    assert changed >= 5, "coverage never changed a plan: the test would not see a wrong direction"


@pytest.mark.parametrize("seed", [0, 1])
def test_planner_equals_brute_force_for_a_coverage_table(seed):
    profile = make_profile(num_blocks=4, lora_ranks=(4,), seed=seed, recompute=seed == 1)
    coverage = (0.3, 1.0, 0.55, 0.8)
    planner = ProfilePlanner(profile, "coverage", importance=coverage)
    brute = BruteForce(all_configs(profile), planner.goal)
    rng = random.Random(seed)
    for _ in range(25):
        d = memory_device(profile, rng.random() * 1.2)
        caps = planner.caps(budget_of(d))
        found, expected = planner.answer(caps), brute.best(caps)
        assert (found is None) == (expected is None)
        if expected is not None:
            assert found[1] == planner.goal.value(expected[0], expected[2].trainable_params)
            assert found[0] == expected[0]


def test_fleet_coverage_is_a_fixed_point_and_single_class_is_layers():
    profile = make_profile(num_blocks=5, lora_ranks=(4,), seed=6)
    devices = [memory_device(profile, f, f"c{i}") for i, f in enumerate((0.1, 0.45, 1.1))]
    shares = [0.5, 0.3, 0.2]
    plans = plan_coverage(profile, devices, shares, [budget_of(d) for d in devices])
    assert plans.converged
    weight = samples_per_round(shares, devices)
    trains = [None if s is None else tuple(is_trainable(x) for x in s.block_states) for s, _ in plans.answers]
    for c, (solution, _) in enumerate(plans.answers):
        assert plans.coverage[c] == block_coverage(c, weight, trains, profile.num_blocks)  # the others' final plans
        alone = ProfilePlanner(profile, "coverage", importance=plans.coverage[c]).solve(devices[c])
        assert solution.block_states == alone.block_states
    fleet = Fleet("f", tuple(FleetClass(d, s) for d, s in zip(devices, shares)), ("x",), "test")
    result = solve_fleet([profile], fleet, objective="coverage")
    assert [s.block_states for s in result.chosen.solutions] == [s.block_states for s, _ in plans.answers]
    one = Fleet("one", (FleetClass(devices[1], 1.0),), ("x",), "test")
    assert (solve_fleet([profile], one, objective="coverage").chosen.solutions[0].block_states
            == solve_fleet([profile], one).chosen.solutions[0].block_states)


def test_api_plans_several_devices_under_coverage_together():
    """plan_for_devices (solve --device A --device B) with coverage: the classes see each other (equal shares)."""
    profile = make_profile(num_blocks=5, lora_ranks=(4,), seed=6)
    devices = [memory_device(profile, f, f"c{i}") for i, f in enumerate((0.1, 0.45))]
    plan = plan_for_devices(profile, devices, SolverSettings("coverage", False, 10.0, 0, 1))
    expected = plan_coverage(profile, devices, [0.5, 0.5], [budget_of(d) for d in devices]).answers
    assert plan.solver.objective == "coverage"
    assert [c.block_states for c in plan.classes] == [s.block_states for s, _ in expected]


def test_coverage_objective_under_a_fleet_limit():
    """With --min-coverage the coupled choice takes each class's rows from its own coverage table and keeps
    every trained block at the limit (each block's share of clients that train it)."""
    profile = make_profile(num_blocks=5, lora_ranks=(4,), seed=6)
    devices = [memory_device(profile, f, f"c{i}") for i, f in enumerate((0.1, 0.45, 1.1))]
    fleet = Fleet("f", tuple(FleetClass(d, s) for d, s in zip(devices, (0.5, 0.3, 0.2))), ("x",), "test")
    result = solve_fleet([profile], fleet, objective="coverage", limits=FleetLimits(min_coverage=0.45))
    assert result.status == "OPTIMAL"
    for b in range(profile.num_blocks):
        share = sum(c.share for c, s in zip(fleet.classes, result.chosen.solutions)
                    if s is not None and is_trainable(s.block_states[b]))
        assert share == 0 or share >= 0.45 - 1e-9
