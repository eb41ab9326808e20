"""solve/dominance.undominated against the definition, on random rows with ties (small ranges) and chunks of
every size: the chunk filter (only kept rows <= the chunk's largest values are compared) must drop nothing."""

from __future__ import annotations

import numpy as np
import pytest

from budgetplan.solve.dominance import undominated


def by_definition(values) -> np.ndarray:
    return np.array([not any((values[j] <= values[i]).all() for j in range(i)) for i in range(len(values))])


@pytest.mark.parametrize("seed", range(6))
def test_undominated_keeps_exactly_the_rows_no_earlier_row_is_at_most(seed):
    rng = np.random.default_rng(seed)
    rows, columns = int(rng.integers(1, 700)), int(rng.integers(1, 9))
    values = rng.integers(0, 4 + 6 * seed, size=(rows, columns))
    expected = by_definition(values)
    assert (undominated(values) == expected).all()
    assert (undominated(values.astype(object) * 2**70) == expected).all()  # exact Python ints, as the planner's
