"""The accuracy benchmark's own mechanisms on tiny inputs: the grid widens until its best rate is interior, the
score averages tuning seeds, the headroom check counts standard errors, cost to target sums what a run spent."""

from __future__ import annotations

import math
import sys
from concurrent.futures import Future
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from accuracy_report import cost_to_target  # noqa: E402
from accuracy_tuning import Tuning, headroom, standard_error, tuning_score, widen  # noqa: E402


class _Curve:
    def __init__(self, accuracy):
        self.accuracy = accuracy


def _done(accuracy) -> Future:
    future: Future = Future()
    future.set_result(_Curve(accuracy))
    return future


def test_widen_steps_beyond_the_edge_of_the_best():
    assert widen([1e-4, 3e-4, 1e-3], {1e-4: 0.5, 3e-4: 0.6, 1e-3: 0.7}) == 3e-3
    assert widen([1e-4, 3e-4, 1e-3], {1e-4: 0.8, 3e-4: 0.6, 1e-3: 0.7}) == 3e-5
    assert widen([1e-4, 3e-4, 1e-3], {1e-4: 0.5, 3e-4: 0.9, 1e-3: 0.7}) is None


def test_tuning_widens_until_interior_and_averages_seeds():
    """Accuracy peaks at lr 1e-2 (a hill in log lr): a grid 1e-4..1e-3 must grow upward twice to see it."""
    submitted = []

    def submit(lr, seed):
        submitted.append((lr, seed))
        peak = -abs(math.log10(lr) + 2) + (0.01 if seed == 2 else 0.0)
        return _done([0.0, 0.5 + 0.1 * peak, 0.5 + 0.1 * peak, 0.5 + 0.1 * peak])

    tuning = Tuning(submit, [1e-4, 3e-4, 1e-3], [1, 2], max_widen=4)
    while not tuning.decide():
        pass
    assert tuning.best == 0.009 and tuning.interior and tuning.widened == 3  # 3e-3, 9e-3, 3e-2
    assert {lr for lr, _ in submitted} == {1e-4, 3e-4, 1e-3, 3e-3, 9e-3, 0.03}
    assert all((lr, s) in submitted for lr, _ in submitted for s in (1, 2))  # every rate on every tuning seed
    expected = (tuning_score([0.5 + 0.1 * -abs(math.log10(9e-3) + 2)] * 3) * 2 + 0.001) / 2
    assert abs(tuning.scores()[9e-3] - expected) < 1e-12
    capped = Tuning(submit, [1e-4, 3e-4], [1], max_widen=1)
    while not capped.decide():
        pass
    assert capped.best == 9e-4 and capped.interior is False  # 3e-4 x 3 = 9e-4: still at the edge, no more widening


def test_headroom_counts_test_set_standard_errors():
    se = standard_error(0.7, 2000)
    assert abs(se - math.sqrt(0.21 / 2000)) < 1e-15 and se < 0.012
    h = headroom([0.60, 0.70, 0.745, 0.75, 0.75, 0.75, 0.75, 0.75], [0.6, 0.7, 0.71, 0.71, 0.71, 0.71], 2000)
    assert h["passes"] and abs(h["gap_se"] - 0.04 / standard_error(0.73, 2000)) < 1e-9
    assert h["full_converged"]
    close = headroom([0.72] * 6, [0.71] * 6, 2000)
    assert not close["passes"]
    assert not headroom([0.5, 0.55, 0.6, 0.65, 0.7, 0.75], [0.7] * 6, 2000)["full_converged"]  # still climbing


def test_cost_to_target_sums_until_the_first_round_at_target():
    curve, flops, upload = [0.5, 0.69, 0.71, 0.68], [10, 10, 20, 20], [1, 2, 3, 4]
    assert cost_to_target(curve, flops, upload, 0.7) == (3, 40, 6)
    assert cost_to_target(curve, flops, upload, 0.9) == (None, None, None)
    assert cost_to_target(curve, [10, None, 20, 20], upload, 0.7) == (3, None, 6)  # a round's FLOPs unknown


def test_bench_tunes_every_scheme_and_writes_the_results_layout(tmp_path, monkeypatch):
    """The benchmark's driver on a synthetic profile with a fake pool (curves from the rate and seed): every
    scheme and the central runs are tuned on both tuning seeds, widened to an interior rate, run on every seed
    with their extra settings, and the results keep the documented layout the report reads."""
    import accuracy_compare as ac
    import accuracy_report as report
    from accuracy_jobs import Curve
    from budgetplan.testing import make_profile

    jobs = []

    class FakePool:
        def submit(self, job):
            jobs.append(job)
            lr, seed = job.config.train.lr, job.config.seed
            top = 0.7 - 0.1 * abs(math.log10(lr / 3e-4)) + 0.001 * seed
            rounds = job.config.rounds
            return _done_curve(Curve([top - 0.01 * (rounds - r) for r in range(1, rounds + 1)], [1.0] * rounds, 0.0,
                                     [100] * rounds, [10] * rounds))

    monkeypatch.setattr(ac, "reference_accuracy", lambda args, plan: (0.4, 0.41))
    args = ac.parse(["--task", "minilm", "--schemes", "a,f,g", "--fleets", "memory", "--lr-grid", "1e-4,1e-3",
                     "--tune-seeds", "100,101", "--seeds", "0,1", "--rounds", "4", "--out", str(tmp_path),
                     "--scheme-settings", '{"f": {"alpha": 0.3}}'])
    profile = make_profile(num_blocks=3, lora_ranks=(4,), seed=1)
    out = ac.Bench(args, profile, None, FakePool(), log=lambda text: None).run(["memory"])["memory"]
    for key in ("a", "f", "g"):
        scheme = out["schemes"][key]
        assert scheme["lr"] == 1e-4 and scheme["interior"] and set(scheme["lr_grid"]) == {"1e-05", "0.0001", "0.001"}
        assert set(scheme["lr_grid_seeds"]["0.0001"]) == {"100", "101"} and len(scheme["curves"]) == 2
        assert set(scheme) >= {"seeds", "curves", "loss_curves", "lr_grid", "states", "flops_curves", "upload_curves"}
    assert out["schemes"]["f"]["settings"] == {"alpha": 0.3}
    assert {j.config.alpha for j in jobs if j.config.rounds == 4} == {0.5, 0.3}  # f's runs carry its setting
    assert out["central"]["lr"] and out["central-head"]["curve"] and "passes" in out["headroom"]
    text = report.table(out) + report.cost_table(out, 0.8)  # every seed reaches 80% of central in round 1
    assert "| (f) budgetplan coverage | 2/2 | 1 | 100 | 1e-05 |" in text


def _done_curve(curve) -> Future:
    future: Future = Future()
    future.set_result(curve)
    return future


def test_a_worker_s_dataset_cache_is_what_runs_read_and_answers_as_the_loader(monkeypatch):
    """accuracy_jobs caches the encoded dataset per worker by patching the loader the runs call: the patch must
    sit where execute/owndata.run_dataset reads it, take every keyword it passes, and give the same data."""
    import accuracy_jobs
    from fl_helpers import tiny_bert

    from budgetplan.execute import data as data_module
    from budgetplan.execute.owndata import run_dataset
    from budgetplan.execute.settings import RunConfig

    model, config = tiny_bert(), RunConfig(data="drugreview", max_train=40, max_test=8, seed=2)
    plain = run_dataset(config, None, model, 8)
    calls = []
    loader = data_module.load_dataset
    monkeypatch.setattr(data_module, "load_dataset", lambda *a, **k: calls.append(1) or loader(*a, **k))
    accuracy_jobs._cache_datasets()
    first, second = run_dataset(config, None, model, 8), run_dataset(config, None, model, 8)
    assert calls == [1]  # the second run read the cache
    for got in (first, second):
        assert (got.test.labels == plain.test.labels).all() and len(got.train.labels) == len(plain.train.labels)
