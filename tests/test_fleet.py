"""Fleet mode: the fleet file, per-class answers identical to solve_device, and the model choice."""

from __future__ import annotations

import dataclasses
import random

import pytest
from budgetplan.testing import make_profile
from solve_helpers import all_configs, brute_best, device

from budgetplan.devices import BUNDLED_DIR
from budgetplan.errors import ConfigError, DeviceError, InfeasibleError
from budgetplan.profile.compose import compose, standard_configs
from budgetplan.solve.caps import BUDGET_NAMES, budget_of
from budgetplan.solve.planner import NO_CAP
from budgetplan.solve import Fleet, FleetClass, ProfilePlanner, read_fleet, read_fleet_profiles, solve_device, \
    solve_fleet

MIXED_EDGE = BUNDLED_DIR / "fleets" / "mixed-edge.toml"


def write(tmp_path, text: str):
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    return path


def test_bundled_mixed_edge_fleet_reads_and_solves():
    fleet = read_fleet(MIXED_EDGE)
    assert abs(sum(c.share for c in fleet.classes) - 1) < 1e-9 and fleet.model_paths == ("bundled:minilm",)
    result = solve_fleet(read_fleet_profiles(fleet), fleet)
    assert result.status == "OPTIMAL"
    for member, solution in zip(fleet.classes, result.chosen.solutions):
        if solution is not None:
            assert compose(result.chosen.profile, solution.block_states).peak_bytes_predicted <= member.device.memory_bytes


@pytest.mark.parametrize("text,words", [
    ('name = "f"\nmodels = ["a.json"\n', ["line"]),
    ('name = "f"\nmodels = ["a.json"]\n[[classes]]\ndevice = "jetson-nano"\nshare = 0.5\n', ["sum to 0.5"]),
    ('name = "f"\nmodels = ["a.json"]\n[[classes]]\ndevice = "jetson-nano"\nshare = 0\n', ["share", "> 0"]),
    ('name = "f"\nmodels = []\n[[classes]]\ndevice = "jetson-nano"\nshare = 1\n', ["models"]),
    ('name = "f"\nmodels = ["a.json"]\n', ["[[classes]]"]),
])
def test_read_fleet_errors_are_one_line(tmp_path, text, words):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        read_fleet(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    assert all(w in message for w in words), message


def test_read_fleet_unknown_device_lists_known(tmp_path):
    path = write(tmp_path, 'name = "f"\nmodels = ["a.json"]\n[[classes]]\ndevice = "nope"\nshare = 1\n')
    with pytest.raises(DeviceError, match="jetson-nano"):
        read_fleet(path)


def test_read_fleet_device_file_relative_to_fleet(tmp_path):
    (tmp_path / "nano.toml").write_text((BUNDLED_DIR / "jetson-nano.toml").read_text())
    path = write(tmp_path, 'name = "f"\nmodels = ["bundled:minilm"]\n[[classes]]\ndevice_file = "nano.toml"\nshare = 1\n')
    assert read_fleet(path).classes[0].device.name == "jetson-nano"


def random_fleet(profile, count: int, seed: int) -> Fleet:
    rng = random.Random(seed)
    batch = profile.context.batch_size
    classes = [FleetClass(device(rng.randint(60_000, 140_000), rng.randint(5, 40) * 10**9, rng.randint(0, 6_000),
                                 batch, name=f"class-{i}"), 1 / count) for i in range(count)]
    classes.append(dataclasses.replace(classes[0], device=dataclasses.replace(classes[0].device, name="copy")))
    return Fleet("random", tuple(classes), (), "<test>")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fleet_answer_per_class_equals_solve_device_and_brute_force(seed):
    """Answer reuse across classes (identical budgets, one frontier) gives each class its own exact answer."""
    profile = make_profile(num_blocks=5, seed=seed, lora_ranks=(4, 8))
    fleet = random_fleet(profile, 40, seed)
    result = solve_fleet([profile], fleet)
    assert result.status == "OPTIMAL"
    configs, planner = all_configs(profile), ProfilePlanner(profile)
    for member, solution, reason in zip(fleet.classes, result.chosen.solutions, result.chosen.reasons):
        best = brute_best(configs, planner.goal, planner.caps(budget_of(member.device)))
        try:
            direct = solve_device(profile, member.device)
        except InfeasibleError as exc:
            assert solution is None and reason == str(exc) and best is None
            continue
        assert dataclasses.replace(solution, solve_s=0.0) == dataclasses.replace(direct, solve_s=0.0)
        assert solution.block_states == best[0]


def test_model_choice_prefers_the_higher_score():
    small = make_profile(num_blocks=2, seed=3, name="small")
    large = make_profile(num_blocks=5, seed=3, name="large")
    fleet = Fleet("two", (FleetClass(device(10**9, 10**15, 10**9, 8, name="big"), 1.0),), (), "<test>")
    progress = []
    result = solve_fleet([small, large], fleet, progress=lambda done, total: progress.append((done, total)))
    assert result.chosen.profile.model.name == "large" and result.chosen.score == 5.0
    assert [c.score for c in result.candidates] == [2.0, 5.0]
    assert progress[-1] == (2, 2)


def test_no_model_fits_names_each_class():
    profile = make_profile(num_blocks=2, seed=0)
    fleet = Fleet("tiny", (FleetClass(device(1000, 10**15, 10**9, 8, name="a"), 0.5),
                           FleetClass(device(2000, 10**15, 10**9, 8, name="b"), 0.5)), (), "<test>")
    with pytest.raises(InfeasibleError) as info:
        solve_fleet([profile], fleet)
    assert "a: " in str(info.value) and "b: " in str(info.value)


def test_fleet_limits_read_from_the_file(tmp_path):
    path = write(tmp_path, 'name = "f"\nmodels = ["bundled:minilm"]\ningress_bytes_per_round = 5e7\n'
                           'clients_per_round = 10\nmin_coverage = 0.25\n[[classes]]\ndevice = "jetson-nano"\nshare = 1\n')
    limits = read_fleet(path).limits
    assert (limits.ingress_bytes_per_round, limits.clients_per_round, limits.min_coverage) == (5e7, 10, 0.25)


@pytest.mark.parametrize("text,words", [
    ('ingress_bytes_per_round = 1000\n', ["clients_per_round"]),
    ('min_coverage = 1.5\n', ["min_coverage", "(0, 1]"]),
    ('ingress_bytes_per_round = "a lot"\nclients_per_round = 2\n', ["ingress_bytes_per_round", "number"]),
    ('clients_per_round = 0\n', ["clients_per_round", ">= 1"]),
])
def test_fleet_limit_errors_are_one_line(tmp_path, text, words):
    path = write(tmp_path, 'name = "f"\nmodels = ["a.json"]\n' + text + '[[classes]]\ndevice = "jetson-nano"\nshare = 1\n')
    with pytest.raises(ConfigError) as info:
        read_fleet(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and all(w in message for w in words), message


def _spread_device(rng: random.Random, costs, batch: int, name: str):
    """A class whose caps fall anywhere from below the cheapest configuration to above the dearest one."""
    def pick(values):
        low, high = min(values), max(values)
        return max(1, rng.randint(low - (high - low) // 4 - 1, high + (high - low) // 4))
    return device(pick([c.peak_bytes_predicted for c in costs]), pick([c.flops_forward + c.flops_backward
                                                                       for c in costs]),
                  pick([c.upload_bytes for c in costs]), batch, name=name)


@pytest.mark.parametrize("seed", range(6))
def test_vectorised_lookup_equals_the_per_class_lookup(seed):
    """The fleet's grids (answers of all classes at once; for those that fit nothing, the least each budget
    needs) equal the plain lookups per class: Frontier.best, ProfilePlanner.least and solve_class."""
    rng = random.Random(seed)
    profile = make_profile(num_blocks=rng.randint(2, 6), seed=seed, lora_ranks=(4, 8), recompute=seed % 2 == 0,
                           train_embeddings=seed % 3 == 0)
    objective = ("layers", "params")[seed % 2]
    planner = ProfilePlanner(profile, objective, row_limit=None)  # the whole frontier, however large
    costs = [compose(profile, s) for s in standard_configs(profile)]
    devices = [_spread_device(rng, costs, profile.context.batch_size, f"class-{i}") for i in range(120)]
    devices += [dataclasses.replace(d, name=f"copy-{i}") for i, d in enumerate(devices[:10])]
    budgets = [budget_of(d) for d in devices]
    caps = [planner.caps(b) for b in budgets]
    frontier = planner.frontier
    assert frontier is not None and frontier.best_of_many(caps) == [frontier.best(c) for c in caps]
    values = (frontier.peak_bytes, frontier.flops_per_step, frontier.upload_bytes)
    for c, rows in zip(caps, frontier.least_of_many(caps, NO_CAP)):
        for i, name in enumerate(BUDGET_NAMES):
            plain = planner.least(name, tuple(NO_CAP if j == i else v for j, v in enumerate(c)))
            assert (None if rows[i] is None else (frontier.states(rows[i]), int(values[i][rows[i]]))) == plain
    many, alone = planner.solve_classes(devices, budgets), ProfilePlanner(profile, objective, row_limit=None)
    for d, (solution, reason) in zip(devices, many):
        one, why = alone.solve_class(d)
        assert reason == why and (solution is None) == (one is None)
        assert solution is None or dataclasses.replace(solution, solve_s=0) == dataclasses.replace(one, solve_s=0)
    assert 0 < sum(s is None for s, _ in many) < len(many)
    assert any("no plan meets the budgets together" in (r or "") for _, r in many) or seed % 2


def test_a_fleet_of_many_classes_builds_a_larger_frontier(monkeypatch):
    """From FLEET_CLASSES distinct budgets on, the fleet's row limit is FLEET_ROW_LIMIT (one frontier for all
    classes), growing with the number of budgets; below it ROW_LIMIT; the answers are the same either way."""
    import budgetplan.solve.frontier as frontier

    profile = make_profile(num_blocks=4, seed=2, lora_ranks=(4, 8))
    rows = ProfilePlanner(profile, row_limit=None).frontier.largest_partial_rows
    monkeypatch.setattr(frontier, "ROW_LIMIT", rows - 1)
    monkeypatch.setattr(frontier, "FLEET_ROW_LIMIT", rows)
    many = random_fleet(profile, frontier.FLEET_CLASSES, 4)
    few = Fleet("few", many.classes[:frontier.FLEET_CLASSES - 1], (), "<test>")
    whole, alone = solve_fleet([profile], many), solve_fleet([profile], few)
    assert whole.chosen.frontier_rows is not None and alone.chosen.frontier_rows is None
    assert [s and s.block_states for s in whole.chosen.solutions[:len(few.classes)]] == \
           [s and s.block_states for s in alone.chosen.solutions]
    assert whole.chosen.reasons[:len(few.classes)] == alone.chosen.reasons
    limits = [frontier.row_limit_for(n) for n in (1, frontier.FLEET_CLASSES, 100, 1000)]
    assert limits[0] == frontier.ROW_LIMIT < limits[1] == frontier.FLEET_ROW_LIMIT < limits[2] < limits[3]
