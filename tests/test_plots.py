"""The compare plot: every scheme visible (own marker and line style), mean and a band over seeds, whole rounds."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from budgetplan.report.plots import mean_band, plot_compare, seed_curves

matplotlib = pytest.importorskip("matplotlib")  # the budgetplan[plot] extra; setup.sh installs it
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CURVES = {0: [0.30, 0.40, 0.50], 1: [0.34, 0.46, 0.52]}


def write_runs(root, schemes, curves=CURVES):
    for scheme in schemes:
        for seed, accuracies in curves.items():
            folder = root / scheme / f"seed{seed}"
            folder.mkdir(parents=True)
            lines = [json.dumps({"round": r + 1, "accuracy": a}) for r, a in enumerate(accuracies)]
            (folder / "rounds.jsonl").write_text("\n".join(lines) + "\n")
    return [SimpleNamespace(scheme=s, seeds=tuple(curves)) for s in schemes]


def test_mean_and_band_over_seeds_equal_numpy(tmp_path):
    (summary,) = write_runs(tmp_path, ["a"])
    rounds, curves = seed_curves(tmp_path, "a", summary.seeds)
    mean, low, high = mean_band(curves)
    values = np.array(list(CURVES.values()))
    assert rounds == [1, 2, 3]
    assert np.allclose(mean, values.mean(axis=0))
    assert np.allclose(np.array(high) - np.array(low), 2 * values.std(axis=0))


def test_identical_curves_stay_distinguishable_and_rounds_are_whole(tmp_path):
    from budgetplan.report.plots import draw_compare

    summaries = write_runs(tmp_path, ["budgetplan", "caff", "lora", "full", "head"])  # all five identical
    figure, axis = plt.subplots()
    draw_compare(axis, tmp_path, summaries, "tiny on drugreview")
    figure.canvas.draw()
    lines = axis.get_lines()
    assert len(lines) == 5
    assert len({(line.get_marker(), line.get_linestyle()) for line in lines}) == 5
    assert len({line.get_marker() for line in lines}) == 5
    assert len(axis.collections) == 5  # one band per scheme
    ticks = [t for t in axis.get_xticks() if axis.get_xlim()[0] <= t <= axis.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)
    assert axis.get_title() == "tiny on drugreview"
    assert [t.get_text() for t in axis.get_legend().get_texts()][0] == "budgetplan (2 seeds)"
    plt.close(figure)


def test_plot_file_is_written(tmp_path):
    summaries = write_runs(tmp_path / "runs", ["a", "b"])
    path = plot_compare(tmp_path / "runs", summaries, tmp_path / "cmp.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
