"""A class's ladder: the configurations a client falls back to when its class's plan does not fit what it has free.

Rung 0 is the class's answer. The lower rungs are the planner's answers under smaller memory caps, with the
class's own compute and upload caps: caps at geometric steps from the answer's predicted peak down to the least
peak of any configuration within those two caps (the smallest configuration that trains anything; its rung is the
last, exact in both planner modes). Equal answers are kept
once, so a ladder may have fewer rungs than asked for; each lower rung's peak is strictly below the one above it
(an answer that fits a smaller cap would have been the answer at the larger one). Where the planner works per
class, a middle rung whose programme would keep more than RUNG_ROW_LIMIT partial configurations in one pass is
left out too (every rung given is still the exact answer at its cap): near such a cap thousands of configurations
of a large model with every state differ by a unit of tie-break weight, and the exact search takes minutes to
hours (SmolLM2 with int8 and recompute states on jetson-orin-nano-8gb: docs/benchmarks.md, issue 22).
"""

from __future__ import annotations

from budgetplan.solve.caps import MEMORY, Budget
from budgetplan.solve.frontier import FrontierTooLarge
from budgetplan.solve.planner import NO_CAP, ProfilePlanner

LADDER_RUNGS = 4  # rungs per class, the plan included (fewer where answers repeat)
# A middle rung planned per class is left out when one pass keeps more partial configurations than this: the
# widest pass of the per-class rungs measured on SmolLM2 with every state was 9,531 rows (iphone-class, ~3 s);
# the rung left out on jetson-orin-nano-8gb passes 230,000 after ten of 30 blocks.
RUNG_ROW_LIMIT = 40_000


def ladder_states(planner: ProfilePlanner, budget: Budget, plan_states: tuple[str, ...],
                  rungs: int = LADDER_RUNGS, upload_cap: int | None = None) -> list[tuple[str, ...]]:
    """Block states of rungs 1.. (largest peak first) below the configuration `plan_states` of a class with
    `budget`; `upload_cap` lowers the class's upload cap (a fleet whose ingress limit the plan meets)."""
    _, flops, upload = planner.caps(budget)
    upload = upload if upload_cap is None else min(upload, upload_cap)
    top = planner.cost(tuple(plan_states)).peak_bytes_predicted
    least = _least_peak(planner, flops, upload)
    if rungs < 2 or least is None or least[1] >= top:
        return []
    ratio = (least[1] / top) ** (1 / (rungs - 1))
    memory_caps = [int(top * ratio ** k) for k in range(1, rungs - 1)] + [least[1]]
    out, seen = [], {tuple(plan_states)}
    for found in _rungs(planner, [(memory, flops, upload) for memory in memory_caps]):
        if found is not None and found[0] not in seen:
            seen.add(found[0])
            out.append(found[0])
    return out


def _rungs(planner: ProfilePlanner, caps: list[tuple[int, int, int]]) -> list:
    """The planner's answers under each caps; per class, None for a middle rung past RUNG_ROW_LIMIT (the last
    caps, the least peak, always has its answer: few configurations fit it)."""
    if planner.frontier is not None:
        return planner.answers(caps)
    out = []
    for i, c in enumerate(caps):
        try:
            out.append(planner.answer(c, None if i == len(caps) - 1 else RUNG_ROW_LIMIT))
        except FrontierTooLarge:
            out.append(None)
    return out


def _least_peak(planner: ProfilePlanner, flops: int, upload: int) -> tuple[tuple[str, ...], int] | None:
    """The least-peak configuration within the compute and upload caps (planner.least: off the whole frontier,
    or per class the least peak with the objective set aside, then the answer at that peak)."""
    return planner.least(MEMORY, (NO_CAP, flops, upload))

