"""Fleet-wide limits that couple the classes, which no per-class lookup can answer: OR-Tools CP-SAT chooses
one frontier row per class (or lets a class sit out) to maximise the share-weighted objective subject to
- server ingress: sum over classes of share x clients per round x upload bytes <= ingress bytes per round;
- coverage: a block that any class trains is trained by at least `min_coverage` of each round's clients
  (sum of the shares of the classes training it), so a layer-wise average is not built from one client.

Integer data, with every scale a named constant and every rounding conservative (a choice the integer model
accepts meets the real limit; the choice is re-checked in exact arithmetic before it is returned):
- ingress: share -> ceil(share x SHARE_UNITS); upload -> ceil(bytes / unit) with unit = ceil(largest upload /
  UPLOAD_LEVELS) bytes; limit -> floor(ingress x SHARE_UNITS / (clients x unit)). Rounding up the use and down
  the limit can only refuse a choice that fits within one unit, never accept one that does not.
- coverage: share -> floor(share x SHARE_UNITS) (coverage counted low), minimum -> ceil(min x SHARE_UNITS).
- objective: share -> round(share x SHARE_UNITS); a row's integer objective as is while the largest is at most
  OBJECTIVE_LEVELS, else floor(value x OBJECTIVE_LEVELS / largest). Then the lowest sum of each class's row
  rank (its own answer order) among the optimal choices, so a class keeps its own answer wherever it can.
Coefficients stay below SHARE_UNITS x max(UPLOAD_LEVELS, OBJECTIVE_LEVELS) = 1e9, and presolve is off
(CPSAT_PRESOLVE): on tests/data/cpsat-presolve-drops-optimum.pb.txt OR-Tools 9.15's presolve reports OPTIMAL
below the optimum; the model here is small enough to need none.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from budgetplan.errors import ConfigError, PlanError
from budgetplan.profile.types import is_trainable

SHARE_UNITS = 10_000
UPLOAD_LEVELS = 10_000
OBJECTIVE_LEVELS = 100_000
CPSAT_PRESOLVE = False
OPTIMAL, FEASIBLE = "OPTIMAL", "FEASIBLE"


@dataclass(frozen=True)
class FleetLimits:
    """Fleet-wide limits; every field None means no coupling (each class gets its own best answer)."""

    ingress_bytes_per_round: int | None = None
    clients_per_round: int | None = None
    min_coverage: float | None = None  # in (0, 1]

    def __post_init__(self) -> None:
        ingress, clients, coverage = self.ingress_bytes_per_round, self.clients_per_round, self.min_coverage
        if ingress is not None and not (math.isfinite(ingress) and ingress > 0):
            raise ConfigError(f"ingress_bytes_per_round = {ingress!r} must be a positive number of bytes")
        if clients is not None and (int(clients) != clients or clients < 1):
            raise ConfigError(f"clients_per_round = {clients!r} must be a whole number >= 1")
        if ingress is not None and clients is None:
            raise ConfigError("ingress_bytes_per_round needs clients_per_round (the clients sampled per round)")
        if coverage is not None and not 0 < coverage <= 1:
            raise ConfigError(f"min_coverage = {coverage!r} must be a share of clients in (0, 1]")

    @property
    def active(self) -> bool:
        return self.ingress_bytes_per_round is not None or self.min_coverage is not None


@dataclass(frozen=True)
class LimitUse:
    """What one model's plans use of the fleet limits (derived from the shares and the plans' upload bytes)."""

    ingress_bytes_per_round: float | None  # sum over planned classes of share x clients per round x upload bytes
    least_coverage: float | None  # the least share of clients training a block that some class trains
    binds: bool  # the limits changed some class's own best answer (another row, or it sits out)


def limit_use(shares: list[float], plans: list, own: list, limits: FleetLimits) -> LimitUse:
    """`plans` and `own`: per class (block states, upload bytes) or None, under the limits and without them."""
    ingress = least = None
    if limits.ingress_bytes_per_round is not None:
        ingress = sum(s * limits.clients_per_round * p[1] for s, p in zip(shares, plans) if p is not None)
    if limits.min_coverage is not None:
        planned = [(s, p[0]) for s, p in zip(shares, plans) if p is not None]
        blocks = len(planned[0][1]) if planned else 0
        covered = [sum(s for s, states in planned if is_trainable(states[b])) for b in range(blocks)]
        least = min((c for c in covered if c > 0), default=None)
    binds = any((p and p[0]) != (o and o[0]) for p, o in zip(plans, own))
    return LimitUse(ingress, least, binds)


@dataclass(frozen=True)
class Candidate:
    """A row a class may take: its frontier row's objective (integer units), upload and trained blocks."""

    states: tuple[str, ...]
    objective: int
    upload_bytes: int
    trains: tuple[bool, ...]


@dataclass(frozen=True)
class CouplingData:
    """The integer model (see the module docstring); per class, candidates in that class's answer order."""

    shares: tuple[float, ...]
    candidates: tuple[tuple[Candidate, ...], ...]
    value_weights: tuple[int, ...]
    values: tuple[tuple[int, ...], ...]
    ingress_weights: tuple[int, ...]
    uploads: tuple[tuple[int, ...], ...]
    ingress_cap: int | None
    coverage_weights: tuple[int, ...]
    coverage_need: int | None


def coupling_data(shares: list[float], candidates: list[list[Candidate]], limits: FleetLimits) -> CouplingData:
    rows = [c for per_class in candidates for c in per_class]
    largest_value = max((c.objective for c in rows), default=0)
    value = (lambda v: v) if largest_value <= OBJECTIVE_LEVELS else (lambda v: v * OBJECTIVE_LEVELS // largest_value)
    unit = max(1, -(-max((c.upload_bytes for c in rows), default=0) // UPLOAD_LEVELS))
    ingress_cap = None
    if limits.ingress_bytes_per_round is not None:
        ingress_cap = math.floor(limits.ingress_bytes_per_round * SHARE_UNITS / (limits.clients_per_round * unit))
    need = None if limits.min_coverage is None else math.ceil(limits.min_coverage * SHARE_UNITS - 1e-9)
    return CouplingData(
        tuple(shares), tuple(tuple(c) for c in candidates),
        tuple(round(s * SHARE_UNITS) for s in shares),
        tuple(tuple(value(c.objective) for c in per_class) for per_class in candidates),
        tuple(math.ceil(s * SHARE_UNITS) for s in shares),
        tuple(tuple(-(-c.upload_bytes // unit) for c in per_class) for per_class in candidates),
        ingress_cap, tuple(math.floor(s * SHARE_UNITS) for s in shares), need)


def reduce_rows(rows: list[Candidate], limits: FleetLimits) -> list[Candidate]:
    """The rows (in answer order) that can matter: per trained-block set (only with a coverage limit) the
    rows with less upload than every earlier one (only with an ingress limit; else the first)."""
    kept, least = [], {}
    for row in rows:
        key = row.trains if limits.min_coverage is not None else ()
        if key not in least or (limits.ingress_bytes_per_round is not None and row.upload_bytes < least[key]):
            kept.append(row)
            least[key] = row.upload_bytes
    return kept


def feasible(data: CouplingData, choice: list[int | None]) -> bool:
    """Whether a choice (candidate index per class, None: sits out) meets the integer model's limits."""
    if data.ingress_cap is not None:
        used = sum(w * up[r] for w, up, r in zip(data.ingress_weights, data.uploads, choice) if r is not None)
        if used > data.ingress_cap:
            return False
    if data.coverage_need is not None:
        blocks = len(next((c[0].trains for c in data.candidates if c), ()))
        for b in range(blocks):
            training = [w for w, cands, r in zip(data.coverage_weights, data.candidates, choice)
                        if r is not None and cands[r].trains[b]]
            if training and sum(training) < data.coverage_need:
                return False
    return True


def value_of(data: CouplingData, choice: list[int | None]) -> int:
    return sum(w * vals[r] for w, vals, r in zip(data.value_weights, data.values, choice) if r is not None)


def check_exact(data: CouplingData, choice: list[int | None], limits: FleetLimits) -> None:
    """The chosen rows meet the real limits (exact rational arithmetic on the shares as given)."""
    from fractions import Fraction

    picked = [(Fraction(s), cands[r]) for s, cands, r in zip(data.shares, data.candidates, choice) if r is not None]
    if limits.ingress_bytes_per_round is not None:
        used = sum(s * limits.clients_per_round * c.upload_bytes for s, c in picked)
        if used > Fraction(limits.ingress_bytes_per_round):
            raise PlanError(f"internal check failed: fleet ingress {float(used):.0f} B exceeds the limit; please report it")
    if limits.min_coverage is not None and picked:
        for b in range(len(picked[0][1].trains)):
            covered = sum(s for s, c in picked if c.trains[b])
            if 0 < covered < Fraction(limits.min_coverage):
                raise PlanError(f"internal check failed: block {b} covered by {float(covered):.4f} of the clients; "
                                "please report it")


def _model(data: CouplingData):
    from ortools.sat.python import cp_model  # imported here: ortools (and the pandas it loads) take ~1 s

    model = cp_model.CpModel()
    x = [[model.new_bool_var(f"c{c}_r{r}") for r in range(len(cands))] for c, cands in enumerate(data.candidates)]
    sits = [model.new_bool_var(f"c{c}_out") for c in range(len(x))]
    for row, out in zip(x, sits):
        model.add_exactly_one([*row, out])
    if data.ingress_cap is not None:
        model.add(sum(w * u * v for w, ups, row in zip(data.ingress_weights, data.uploads, x)
                      for u, v in zip(ups, row)) <= data.ingress_cap)
    if data.coverage_need is not None and data.candidates:
        blocks = len(next((c[0].trains for c in data.candidates if c), ()))
        for b in range(blocks):
            used = model.new_bool_var(f"block{b}_trained")
            terms = [(w, v) for w, cands, row in zip(data.coverage_weights, data.candidates, x)
                     for cand, v in zip(cands, row) if cand.trains[b]]
            for _, v in terms:
                model.add_implication(v, used)
            model.add(sum(w * v for w, v in terms) >= data.coverage_need * used)
    value = sum(w * val * v for w, vals, row in zip(data.value_weights, data.values, x) for val, v in zip(vals, row))
    rank = sum(r * v for row in x for r, v in enumerate(row)) + sum(len(row) * out for row, out in zip(x, sits))
    return model, x, value, rank


def cpsat_solver(time_limit_s: float, seed: int, workers: int) -> cp_model.CpSolver:
    """The CP-SAT settings every budgetplan model is solved with (tests/test_coupling.py checks them on the
    presolve regression model)."""
    from ortools.sat.python import cp_model

    solver = cp_model.CpSolver()
    solver.parameters.max_time_in_seconds = max(time_limit_s, 0.01)
    solver.parameters.random_seed = seed
    solver.parameters.num_workers = workers
    solver.parameters.cp_model_presolve = CPSAT_PRESOLVE
    return solver


def solve_coupling(data: CouplingData, limits: FleetLimits, time_limit_s: float = 10.0, seed: int = 0,
                   workers: int = 1) -> tuple[list[int | None], str]:
    """(candidate index per class or None for sitting out, OPTIMAL / FEASIBLE); checked before it is returned."""
    from ortools.sat.python import cp_model

    model, x, value, rank = _model(data)
    status, best = OPTIMAL, None
    for objective in ("value", "rank"):
        if objective == "value":
            model.maximize(value)
        else:
            model.add(value >= best)
            model.minimize(rank)
        solver = cpsat_solver(time_limit_s, seed, workers)
        result = solver.solve(model)
        if result not in (cp_model.OPTIMAL, cp_model.FEASIBLE):
            raise PlanError(f"the fleet limits could not be solved within {time_limit_s:g} s; raise --time-limit")
        status = status if result == cp_model.OPTIMAL else FEASIBLE
        choice = [next((r for r, v in enumerate(row) if solver.boolean_value(v)), None) for row in x]
        best = value_of(data, choice)
        if status != OPTIMAL:
            break
    if not feasible(data, choice):
        raise PlanError("internal check failed: the fleet choice breaks the integer limits; please report it")
    check_exact(data, choice, limits)
    return choice, status
