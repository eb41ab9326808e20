"""Device-aware plans (issue 26): a class's ladder of fallback configurations, the rung a client picks from what it
has free, runs that fall back and come back up, and verify per rung."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from budgetplan.api import plan_for_devices
from budgetplan.cli import app
from budgetplan.devices import DeviceClass
from budgetplan.errors import ConfigError, PlanError
from budgetplan.execute import rundir
from budgetplan.execute.client import ClientDropped, train_client
from budgetplan.execute.ladder import Resources, choose_rung, resources_of
from budgetplan.execute.loop import client_seed
from budgetplan.execute.records import read_rounds
from budgetplan.execute.rounds import CHECKPOINT, prepare, run
from budgetplan.execute.settings import MIB, SettingError
from budgetplan.integrations.flower.client import node_rung
from budgetplan.plan import Plan, SolverSettings, predicted_costs, read_plan, write_plan
from budgetplan.profile.compose import compose
from budgetplan.profile.profiler import ProfileRequest, profile_model
from budgetplan.profile.types import FROZEN, with_int8_embeddings
from budgetplan.solve import solve_device
from budgetplan.solve.caps import budget_of
from budgetplan.solve.ladder import ladder_states
from budgetplan.solve.planner import ProfilePlanner
from budgetplan.verify import verify_run
from fl_helpers import tiny_bert, tiny_config

runner = CliRunner()
FIELDS = ("memory_bytes", "total_memory_bytes", "flops_per_s", "uplink_bits_per_s", "round_deadline_s",
          "upload_time_budget_s", "samples_per_round")


def device(memory_bytes: int, flops_per_s: float = 1e15, name: str = "dev") -> DeviceClass:
    """A class that only memory binds (compute and uplink far above any tiny-bert step)."""
    return DeviceClass(name, "test class", memory_bytes, memory_bytes, flops_per_s, 1e12, 60.0, 60.0, 64,
                       tuple(f"{f}: assumption: test" for f in FIELDS))


@pytest.fixture(scope="module")
def plain_profile():
    """tiny-bert without LoRA states: every rung uploads whole tensors, so a round's mean is easy to compute."""
    return profile_model(tiny_bert(), ProfileRequest(batch_size=4, seq_len=16, lora_ranks=(), measure_configs=False))


@pytest.fixture(scope="module")
def plain_plan(plain_profile):
    full = compose(plain_profile, ("trained",) * 4).peak_bytes_predicted
    return plan_for_devices(plain_profile, [device(full)], SolverSettings("layers", False, 10.0, 0, 1))


def test_rungs_are_the_planners_answers_under_smaller_caps_down_to_the_least_peak(tiny_profiles):
    _, profile, _ = tiny_profiles["tiny-bert"]
    budget = compose(profile, ("trained",) * 4).peak_bytes_predicted
    plan_class = plan_for_devices(profile, [device(budget)], SolverSettings("layers", False, 10.0, 0, 1)).classes[0]
    assert plan_class.rungs >= 3
    peaks = [plan_class.at_rung(i).predicted.peak_bytes for i in range(plan_class.rungs)]
    assert peaks == sorted(peaks, reverse=True) and len(set(peaks)) == len(peaks)  # strictly smaller, largest first
    # the class was planned on the profile variant that trains most (frozen embeddings in int8 or not): so are its rungs
    planned_on = with_int8_embeddings(profile) if plan_class.int8_embeddings else profile
    for i in range(1, plan_class.rungs):  # each rung is what the planner answers under a cap at its own peak
        rung = plan_class.at_rung(i)
        assert rung.block_states == solve_device(planned_on, device(peaks[i])).block_states
        assert rung.predicted == predicted_costs(planned_on, rung.block_states, rung.budget)
    states = [s for s in profile.block_state_names if s != FROZEN]  # brute force: the least peak of anything
    least = min(p for p in (_peak(profile, c) for c in itertools.product(states, repeat=4)) if p is not None)
    assert peaks[-1] == least


def _peak(profile, states) -> int | None:
    """compose's peak, or None for states without a gradient path to them."""
    try:
        return compose(profile, states).peak_bytes_predicted
    except ConfigError:
        return None


def test_plan_json_carries_the_ladder_and_older_plans_load_as_a_ladder_of_one(plain_plan, tmp_path):
    path = tmp_path / "plan.json"
    write_plan(plain_plan, path)
    data = json.loads(path.read_text())
    assert data["schema_version"] == "2.2"
    assert read_plan(path) == plain_plan
    entry = data["classes"]["dev"]
    assert len(entry["ladder"]) == plain_plan.classes[0].rungs - 1 >= 1
    assert entry["ladder"][0]["predicted"]["source"] == "derived"
    old = {**data, "schema_version": "2.1", "classes": {"dev": {k: v for k, v in entry.items() if k != "ladder"}}}
    assert Plan.from_dict(old).classes[0].rungs == 1
    bad = {**data, "classes": {"dev": {**entry, "ladder": [{**entry["ladder"][0], "block_states": ["trained"]}]}}}
    with pytest.raises(PlanError, match="classes/dev/ladder/1/block_states has 1 states"):
        Plan.from_dict(bad)
    with pytest.raises(PlanError, match="has no rung 9"):
        plain_plan.classes[0].at_rung(9)


def test_a_client_trains_the_highest_rung_that_fits_and_sits_out_below_the_lowest(plain_plan):
    c = plain_plan.classes[0]
    peaks = [c.at_rung(i).predicted.peak_bytes for i in range(c.rungs)]

    def pick(free, **kw):
        return choose_rung(c, Resources(int(free), "simulated", kw.pop("deadline", None)), 0.03, 2, **kw)

    assert pick(peaks[0] * 1.03 + 1).rung == 0
    assert pick(peaks[0] * 1.03 - 1).rung == 1  # the margin counts
    assert pick(peaks[-1] * 1.03 + 1).rung == c.rungs - 1
    out = pick(peaks[-1])
    assert out.rung is None and out.reason.startswith("sat out:") and "lowest rung" in out.reason
    static = pick(peaks[0], ladder=False)
    assert static.rung is None and "--no-ladder" in static.reason
    # a deadline: a rung whose predicted FLOPs (2 local steps at 1e15 FLOP/s) take longer is passed over
    seconds = [c.at_rung(i).predicted.flops_per_step * 2 / 1e15 for i in range(c.rungs)]
    assert pick(peaks[0] * 2, deadline=(seconds[0] + seconds[1]) / 2).rung == 1


def test_simulated_free_memory_is_seeded_and_a_schedule_repeats_its_last_value(plain_plan):
    c = plain_plan.classes[0]
    config = tiny_config(free_memory_jitter=0.3, free_memory_schedule="1:10,2.5")
    draws = [resources_of(config, c, r, 0).free_memory_bytes for r in range(1, 30)]
    assert draws == [resources_of(config, c, r, 0).free_memory_bytes for r in range(1, 30)]
    assert all(0.7 * c.budget.memory_bytes <= d <= 1.3 * c.budget.memory_bytes for d in draws)
    assert len(set(draws)) > 20
    scheduled = [resources_of(config, c, r, 1).free_memory_bytes for r in (1, 2, 5)]
    assert scheduled == [10 * MIB, int(2.5 * MIB), int(2.5 * MIB)]
    assert resources_of(tiny_config(), c, 1, 0).source.startswith("measured: psutil")


@pytest.mark.parametrize("text", ["", "x:1", "0:1,-2", "0:1;0:2", "-1:4", "0:inf"])
def test_a_malformed_schedule_is_refused_naming_the_setting(text):
    with pytest.raises(SettingError, match="free_memory_schedule must look like"):
        tiny_config(free_memory_schedule=text)


def test_the_cli_refuses_a_malformed_schedule_in_one_line(tmp_path, plain_plan):
    write_plan(plain_plan, tmp_path / "plan.json")
    result = runner.invoke(app, ["run", str(tmp_path / "plan.json"), "--data", "drugreview",
                                 "--free-memory-schedule", "0:lots", "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    assert "--free-memory-schedule must look like" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_memory_drops_mid_run_the_client_falls_back_then_comes_back_and_the_mean_is_the_hand_computed_one(
        plain_plan, tmp_path):
    c = plain_plan.classes[0]
    full, lower = (c.at_rung(i).predicted.peak_bytes * 1.05 / MIB for i in (0, 1))
    config = tiny_config(rounds=1, clients=2, clients_per_round=2, max_train=40, max_test=8, measure=True,
                         free_memory_schedule=f"0:{full:.4f},{lower:.4f},{full:.4f}")
    run_dir = tmp_path / "run"
    states = {}
    for rounds in (1, 2, 3):  # stop after each round (resume) to read the global state it left
        run(plain_plan, replace(config, rounds=rounds), run_dir, resume=rounds > 1)
        states[rounds] = rundir.read_checkpoint(run_dir / CHECKPOINT).global_state
    history = read_rounds(run_dir / "rounds.jsonl")
    assert [[(t.client, t.rung) for t in r.trained] for r in history] == [[(0, 0), (1, 0)], [(0, 1), (1, 0)],
                                                                          [(0, 0), (1, 0)]]
    # round 2 by hand: each client's upload trained from round 1's weights, then a per-tensor weighted mean
    setup = prepare(plain_plan, replace(config, rounds=3))
    uploads = []
    for client, rung in ((0, 1), (1, 0)):
        data = setup.dataset.train.subset(setup.parts.clients[client])
        result = train_client(setup.template, states[1], c.at_rung(rung), data, config.train,
                              client_seed(config.seed, 2, client))
        uploads.append((result.upload, result.num_examples))
    assert set(uploads[0][0]) < set(uploads[1][0])  # the lower rung trains fewer tensors
    for name, before in states[1].items():
        senders = [(u[name].numpy(), n) for u, n in uploads if name in u]
        expected = before.numpy() if not senders else np.average(np.stack([s for s, _ in senders]), axis=0,
                                                                   weights=[n for _, n in senders])
        assert np.allclose(states[2][name].numpy(), expected, atol=1e-6), name
    # the rung's first step is measured when first trained, and verify checks it against the rung's own plan
    report = verify_run(run_dir)
    checks = {check.name: check for check in report.checks}
    assert set(checks) == {"dev", "dev@rung1"} and report.passed
    assert checks["dev@rung1"].predicted_peak_bytes == c.at_rung(1).predicted.peak_bytes
    assert abs(checks["dev@rung1"].peak_error) <= 0.03


def test_the_static_plan_sits_out_where_the_ladder_trains(plain_plan, tmp_path):
    c = plain_plan.classes[0]
    lower = c.at_rung(1).predicted.peak_bytes * 1.05 / MIB
    config = tiny_config(rounds=1, clients=2, clients_per_round=2, max_train=40, max_test=8,
                         free_memory_schedule=f"0:{lower:.4f}")
    laddered = run(plain_plan, config, tmp_path / "ladder").history[0]
    static = run(plain_plan, replace(config, ladder=False), tmp_path / "static").history[0]
    assert [(t.client, t.rung) for t in laddered.trained] == [(0, 1), (1, 0)] and not laddered.dropped
    assert [t.client for t in static.trained] == [1]
    assert static.dropped[0].client == 0 and static.dropped[0].reason.startswith("sat out:")
    with pytest.raises(ClientDropped, match="sat out"):  # a Flower node decides the same way
        node_rung(c, replace(config, ladder=False), 1, 0, "cpu")
    assert node_rung(c, config, 1, 0, "cpu") == 1


def test_an_upload_of_a_rung_the_class_lacks_is_rejected(plain_plan):
    from budgetplan.execute.loop import Reply, aggregate

    state = {n: p.detach().clone() for n, p in tiny_bert().model.named_parameters()}
    reply = Reply(0, "dev", {}, 4, {"rung": 7})
    _, trained, dropped = aggregate(plain_plan, state, [reply], frozenset())
    assert not trained and "has no rung 7" in dropped[0].reason
    torch.testing.assert_close(_, state)


def test_a_planner_working_per_class_reads_the_same_ladder(tiny_profiles):
    """Where the frontier is too large to build whole, the ladder comes from per-class programmes (no unbounded
    one): on tiny-bert, where head only has the least peak, it is the whole frontier's ladder."""
    _, profile, _ = tiny_profiles["tiny-bert"]
    whole, per_class = ProfilePlanner(profile, row_limit=None), ProfilePlanner(profile, row_limit=1)
    assert whole.frontier is not None and per_class.frontier is None
    budget = budget_of(device(compose(profile, ("trained",) * 4).peak_bytes_predicted))
    states = whole.answer(whole.caps(budget))[0]
    assert len(ladder_states(whole, budget, states)) >= 2
    assert ladder_states(per_class, budget, states) == ladder_states(whole, budget, states)
    assert ladder_states(whole, budget, states, rungs=1) == []


def test_a_middle_rung_past_the_row_limit_is_left_out_and_every_rung_given_is_exact(tiny_profiles, monkeypatch):
    """Per class, a middle rung whose programme keeps more rows than RUNG_ROW_LIMIT is left out: with the limit at
    1 only the lowest rung (the least peak) stays, and it and every rung kept are the unlimited ladder's."""
    import budgetplan.solve.ladder as ladder_module

    _, profile, _ = tiny_profiles["tiny-bert"]
    budget = budget_of(device(compose(profile, ("trained",) * 4).peak_bytes_predicted))
    whole = ProfilePlanner(profile, row_limit=None)
    states = whole.answer(whole.caps(budget))[0]
    full = ladder_states(whole, budget, states)
    assert len(full) >= 2
    monkeypatch.setattr(ladder_module, "RUNG_ROW_LIMIT", 1)
    limited = ladder_states(ProfilePlanner(profile, row_limit=1), budget, states)
    assert limited == full[-1:]


def test_flower_nodes_pick_the_same_rungs_and_end_with_the_embedded_weights(plain_plan, tmp_path):
    """The Flower ClientApp runs the same choice on its node: a client that falls back, one that sits out."""
    pytest.importorskip("flwr")
    c = plain_plan.classes[0]
    lower, none = c.at_rung(1).predicted.peak_bytes * 1.05 / MIB, c.at_rung(c.rungs - 1).predicted.peak_bytes / MIB
    write_plan(plain_plan, tmp_path / "plan.json")
    args = ["--data", "drugreview", "--rounds", "2", "--clients", "3", "--local-steps", "2", "--max-train", "60",
            "--max-test", "8", "--seq-len", "16", "--no-measure",
            "--free-memory-schedule", f"0:{lower:.4f};2:1000,{none:.4f}"]
    runs = {}
    for name in ("embedded", "flower"):
        result = runner.invoke(app, ["run", str(tmp_path / "plan.json"), *args, "--engine", name,
                                     "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        runs[name] = (torch.load(tmp_path / name / "checkpoint.pt", weights_only=True)["global_state"],
                      read_rounds(tmp_path / name / "rounds.jsonl"))
    for engine_name, (_, history) in runs.items():
        assert [[(t.client, t.rung) for t in r.trained] for r in history] == [[(0, 1), (1, 0), (2, 0)],
                                                                               [(0, 1), (1, 0)]], engine_name
        assert "sat out" in history[1].dropped[0].reason and history[1].dropped[0].client == 2
    embedded, flower = runs["embedded"][0], runs["flower"][0]
    for key in embedded:
        assert torch.allclose(embedded[key], flower[key], rtol=0, atol=1e-6), key
