"""The compare plot: test accuracy per round for every scheme (optional extra budgetplan[plot] = matplotlib)."""

from __future__ import annotations

import itertools
from pathlib import Path

from budgetplan.errors import ConfigError
from budgetplan.execute.records import ROUNDS_FILE, read_rounds

PLOT_HINT = "--plot needs matplotlib: pip install 'budgetplan[plot]' (or leave out --plot)"
# Every scheme gets its own marker and line style, so identical curves stay visible on top of each other.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINES = ("-", "--", "-.", ":")


def check_matplotlib() -> None:
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigError(PLOT_HINT)


def seed_curves(out_dir: Path, scheme: str, seeds) -> tuple[list[int], list[list[float]]]:
    """(rounds, one accuracy list per seed), cut to the rounds every seed reached."""
    curves = []
    for seed in seeds:
        records = read_rounds(Path(out_dir) / scheme / f"seed{seed}" / ROUNDS_FILE)
        curves.append({r.round: r.accuracy for r in records})
    rounds = sorted(set.intersection(*(set(c) for c in curves)))
    return rounds, [[c[r] for r in rounds] for c in curves]


def mean_band(curves: list[list[float]]) -> tuple[list[float], list[float], list[float]]:
    """Per round: mean over seeds, and mean - std / mean + std (population std; zero width for one seed)."""
    import numpy as np

    values = np.asarray(curves, dtype=float)
    mean, std = values.mean(axis=0), values.std(axis=0)
    return mean.tolist(), (mean - std).tolist(), (mean + std).tolist()


def draw_compare(axis, out_dir, summaries, title: str) -> None:
    """Per scheme the mean over seeds (own marker and line style) and a mean ± std band; whole rounds only."""
    from matplotlib.ticker import MaxNLocator

    styles = zip(itertools.cycle(MARKERS), itertools.cycle(LINES))
    for s, (marker, line) in zip(summaries, styles):
        rounds, curves = seed_curves(out_dir, s.scheme, s.seeds)
        mean, low, high = mean_band(curves)
        drawn = axis.plot(rounds, mean, marker=marker, linestyle=line, label=f"{s.scheme} ({len(curves)} seeds)")
        axis.fill_between(rounds, low, high, color=drawn[0].get_color(), alpha=0.15, linewidth=0)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("round")
    axis.set_ylabel("test accuracy (mean ± std over seeds)")
    axis.set_title(title)
    axis.legend()


def plot_compare(out_dir, summaries, path, title: str = "Test accuracy per round") -> Path:
    """Write the compare PNG (see draw_compare) and return its path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ConfigError(PLOT_HINT) from None
    figure, axis = plt.subplots(figsize=(7, 4.5))
    draw_compare(axis, out_dir, summaries, title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return Path(path)
