"""Learning-rate tuning and the central headroom check of the accuracy benchmark.

Tuning: each (fleet, scheme) runs every rate of its grid on every tuning seed; its score at a rate is the mean over
tuning seeds of the mean held-out accuracy of the last TUNE_ROUNDS rounds. While the best rate sits at an edge of
the grid, the grid grows by one step (its mean ratio between neighbouring rates) beyond that edge, at most
MAX_WIDEN times; the result says whether the best rate ended interior.
Headroom: before schemes are compared, full fine-tuning must beat a new head on the frozen model, both trained
centrally on the pooled data, by at least HEADROOM_SE standard errors of the test set (sqrt(p(1-p)/n), p the
accuracy between them): otherwise the task cannot show what training more layers buys.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import Future

TUNE_ROUNDS = 3  # the tuning score: mean held-out accuracy over the last rounds (one round is noisy)
MAX_WIDEN = 4
HEADROOM_SE = 3.0


def tuning_score(accuracy: list[float]) -> float:
    tail = accuracy[-TUNE_ROUNDS:]
    return sum(tail) / len(tail)


def widen(grid: list[float], scores: dict[float, float]) -> float | None:
    """The rate one grid step beyond the edge where the best score sits (the grid's mean ratio, to one significant
    digit: 1e-3 -> 3e-3 on a 1-3-10 grid), or None when the best is interior."""
    ordered = sorted(grid)
    best = max(ordered, key=lambda lr: (scores[lr], -lr))  # a tie goes to the lower rate
    step = 3.0 if len(ordered) == 1 else (ordered[-1] / ordered[0]) ** (1 / (len(ordered) - 1))
    if best == ordered[-1]:
        return float(f"{best * step:.1g}")
    if best == ordered[0] and len(ordered) > 1:
        return float(f"{best / step:.1g}")
    return None


class Tuning:
    """One (fleet, scheme)'s rates on every tuning seed; `decide()` widens the grid or settles the best rate."""

    def __init__(self, submit: Callable[[float, int], Future], grid: list[float], seeds: list[int],
                 max_widen: int = MAX_WIDEN):
        self.submit, self.seeds, self.max_widen = submit, seeds, max_widen
        self.grid: list[float] = []
        self.futures: dict[tuple[float, int], Future] = {}
        self.widened, self.best, self.interior = 0, None, None
        for lr in grid:
            self.add(lr)

    def add(self, lr: float) -> None:
        self.grid.append(lr)
        for seed in self.seeds:
            self.futures[(lr, seed)] = self.submit(lr, seed)

    def scores(self) -> dict[float, float]:
        return {lr: sum(tuning_score(self.futures[(lr, s)].result().accuracy) for s in self.seeds) / len(self.seeds)
                for lr in sorted(self.grid)}

    def per_seed(self) -> dict[str, dict[str, float]]:
        return {f"{lr:g}": {str(s): tuning_score(self.futures[(lr, s)].result().accuracy) for s in self.seeds}
                for lr in sorted(self.grid)}

    def decide(self) -> bool:
        """False while runs are pending or the grid just grew; True once the best rate is settled."""
        if self.best is not None:
            return True
        if not all(f.done() for f in self.futures.values()):
            return False
        scores = self.scores()
        extra = widen(self.grid, scores)
        if extra is not None and self.widened < self.max_widen and extra not in self.grid:
            self.widened += 1
            self.add(extra)
            return False
        self.best = max(sorted(self.grid), key=lambda lr: (scores[lr], -lr))
        self.interior = extra is None
        return True

    def summary(self) -> dict:
        return {"lr": self.best, "lr_grid": {f"{k:g}": v for k, v in self.scores().items()},
                "lr_grid_seeds": self.per_seed(), "tune_seeds": self.seeds, "interior": self.interior,
                "widened": self.widened}


def standard_error(accuracy: float, n: int) -> float:
    """Binomial standard error of an accuracy measured on n test examples."""
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / max(n, 1))


def headroom(full: list[float], head: list[float], n_test: int) -> dict:
    """Full fine-tuning against head-only, both central (curves of held-out accuracy per round)."""
    a, b = tuning_score(full), tuning_score(head)
    se = standard_error((a + b) / 2, n_test)
    gap = (a - b) / se if se > 0 else math.inf
    return {"full": a, "head": b, "test_examples": n_test, "se": se, "gap_se": gap, "passes": gap >= HEADROOM_SE,
            "full_converged": converged(full, se), "head_converged": converged(head, se)}


def converged(curve: list[float], se: float) -> bool:
    """No longer climbing: the last TUNE_ROUNDS rounds gain less than one standard error over the ones before."""
    if len(curve) < 2 * TUNE_ROUNDS:
        return False
    return tuning_score(curve) - tuning_score(curve[:-TUNE_ROUNDS]) < se
