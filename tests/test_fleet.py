"""Fleet mode: the fleet file, per-class answers identical to solve_device, and the model choice."""

from __future__ import annotations

import dataclasses
import random

import pytest
from budgetplan.testing import make_profile
from test_solve import device

from budgetplan.devices import BUNDLED_DIR
from budgetplan.errors import ConfigError, DeviceError, InfeasibleError
from budgetplan.profile.compose import compose
from budgetplan.solve import Fleet, FleetClass, read_fleet, solve_device, solve_fleet
from budgetplan.solve.budget import BUDGET_NAMES
from budgetplan.solve.classes import BEST, ProfileSolver, fits
from budgetplan.solve.fleet import read_fleet_profiles
from budgetplan.solve.run import solve_best

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


@pytest.mark.parametrize("seed", [0, 1])
def test_fleet_answer_per_class_equals_solve_device(seed):
    profile = make_profile(num_blocks=5, seed=seed, lora_ranks=(4, 8))
    fleet = random_fleet(profile, 40, seed)
    result = solve_fleet([profile], fleet, time_limit_s=20.0)
    choice = result.chosen
    for member, solution, reason in zip(fleet.classes, choice.solutions, choice.reasons):
        try:
            direct = solve_device(profile, member.device, time_limit_s=20.0)
        except InfeasibleError as exc:
            assert solution is None and reason == str(exc)
            continue
        assert dataclasses.replace(solution, solve_s=0.0) == dataclasses.replace(direct, solve_s=0.0)


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


def test_worker_processes_give_the_same_answers():
    profiles = [make_profile(num_blocks=n, seed=n, lora_ranks=(4,), name=f"m{n}") for n in (2, 4, 3)]
    fleet = random_fleet(profiles[1], 12, seed=2)
    progress = []
    alone = solve_fleet(profiles, fleet, processes=1)
    shared = solve_fleet(profiles, fleet, processes=2, progress=lambda done, total: progress.append((done, total)))
    assert shared.status == alone.status and shared.chosen.profile.model.name == alone.chosen.profile.model.name
    for a, b in zip(alone.candidates, shared.candidates):
        assert a.score == b.score and a.reasons == b.reasons
        assert [s and dataclasses.replace(s, solve_s=0.0) for s in a.solutions] == [
            s and dataclasses.replace(s, solve_s=0.0) for s in b.solutions]
    assert progress[-1] == (3 * len(fleet.classes), 3 * len(fleet.classes))


@pytest.mark.parametrize("seed", [0, 1])
def test_stored_answer_bounds_hold_at_the_fresh_optimum(seed):
    """AnswerCache.bounds narrows a solve only where the optimum lies: checked against a solver with no cache."""
    profile = make_profile(num_blocks=5, seed=seed, lora_ranks=(4, 8))
    cached, fresh = ProfileSolver(profile, relax=True), ProfileSolver(profile)
    rng, top = random.Random(seed), cached.top
    narrowed = 0
    for _ in range(30):
        caps = tuple(rng.randint(top_i // 20, top_i) for top_i in top)
        known = cached.caches[BEST].bounds(caps, [])
        answer = solve_best(fresh.sm, dict(zip(BUDGET_NAMES, caps)), fresh.params)
        if answer.found:
            assert known.floor <= answer.primary and (known.ceiling is None or answer.primary <= known.ceiling)
            narrowed += known.floor > 0 or known.ceiling is not None
        if known.hint is not None:
            hinted = next(o for c in cached.caches.values() for _, o in c.entries if o.block_states == known.hint)
            assert fits(hinted, caps) and hinted.primary == known.floor
        assert dataclasses.replace(cached.answer(BEST, caps), wall_s=0.0) == dataclasses.replace(answer, wall_s=0.0)
    assert narrowed > 0
