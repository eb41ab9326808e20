"""Fleet-wide limits (server ingress, block coverage) over frontier rows with CP-SAT, against brute force;
and the CP-SAT settings against the model on which OR-Tools 9.15's presolve drops the optimum."""

from __future__ import annotations

import itertools
import random
from fractions import Fraction
from pathlib import Path

import pytest
from cli_helpers import assert_one_line_error
from ortools.sat.python import cp_model
from budgetplan.testing import make_profile
from solve_helpers import all_configs, device, fits
from typer.testing import CliRunner

from budgetplan.cli import app
from budgetplan.errors import ConfigError
from budgetplan.profile.types import is_trainable
from budgetplan.solve import Fleet, FleetClass, FleetLimits, ProfilePlanner, solve_fleet
from budgetplan.solve.caps import budget_of
from budgetplan.solve.coupling import Candidate, coupling_data, cpsat_solver, feasible, solve_coupling, value_of

PRESOLVE_MODEL = Path(__file__).parent / "data" / "cpsat-presolve-drops-optimum.pb.txt"


def _linear_range(ct, fixed: dict, domains) -> tuple[int, int, list]:
    """Sum over fixed variables, and the free (non-fixed) terms of one linear constraint."""
    total, free = 0, []
    for var, coeff in zip(ct.vars, ct.coeffs):
        if var in fixed:
            total += coeff * fixed[var]
        else:
            free.append((var, coeff))
    return total, free


def brute_force_optimum(proto) -> int:
    """Enumerate the boolean variables the constraints or the objective use (the others are free); each other
    variable occurs in at most one constraint and not in the objective, so it only needs some value of its
    domain that satisfies that constraint."""
    domains = [tuple(v.domain) for v in proto.variables]
    used = set(proto.objective.vars) | {v if v >= 0 else -v - 1 for ct in proto.constraints
                                        for v in (ct.linear.vars if ct.has_linear() else ct.exactly_one.literals)}
    booleans = sorted(i for i in used if domains[i] == (0, 1))
    assert len(booleans) <= 16
    constants = {i: d[0] for i, d in enumerate(domains) if len(d) == 2 and d[0] == d[1]}
    others = [v for ct in proto.constraints if ct.has_linear() for v in ct.linear.vars
              if v not in booleans and v not in constants]
    assert len(others) == len(set(others)) and not set(others) & set(proto.objective.vars)
    assert all(len(domains[v]) == 2 for v in others)  # one interval: any value between its ends is allowed
    best = None
    for values in itertools.product((0, 1), repeat=len(booleans)):
        fixed = {**constants, **dict(zip(booleans, values))}
        if all(_holds(ct, fixed, domains) for ct in proto.constraints):
            value = sum(c * fixed[v] for v, c in zip(proto.objective.vars, proto.objective.coeffs))
            best = value if best is None else min(best, value)
    return best


def _holds(ct, fixed: dict, domains) -> bool:
    if ct.has_exactly_one():
        return sum(fixed[v] if v >= 0 else 1 - fixed[-v - 1] for v in ct.exactly_one.literals) == 1
    assert ct.has_linear() and not list(ct.enforcement_literal)
    total, free = _linear_range(ct.linear, fixed, domains)
    low, high = total, total
    for var, coeff in free:
        lo, hi = domains[var][0], domains[var][-1]
        low, high = low + min(coeff * lo, coeff * hi), high + max(coeff * lo, coeff * hi)
    bounds = list(ct.linear.domain)
    return any(max(low, a) <= min(high, b) for a, b in zip(bounds[::2], bounds[1::2]))


def test_cpsat_settings_keep_the_optimum_presolve_drops():
    """OR-Tools 9.15 with default presolve reports OPTIMAL -5,901,012,000 on this model built by the old
    per-class planner; brute force (and the project's settings) give -11,802,024,000."""
    model = cp_model.CpModel()
    model.proto.parse_text_format(PRESOLVE_MODEL.read_text())
    truth = brute_force_optimum(model.proto)
    assert truth == -11_802_024_000
    solver = cpsat_solver(10.0, 0, 1)
    assert solver.solve(model) == cp_model.OPTIMAL
    assert round(solver.objective_value) == truth


def small_fleet(seed: int, count: int):
    """A 3-block profile and `count` classes with shares in multiples of 1/20 (exact in the integer model)."""
    rng = random.Random(seed)
    profile = make_profile(num_blocks=3, seed=seed, lora_ranks=(4,))
    configs = all_configs(profile)
    peaks = sorted(c.peak_bytes_predicted for *_, c in configs)
    parts = [rng.randint(1, 6) for _ in range(count)]
    shares = [Fraction(p, sum(parts)) for p in parts]
    classes = tuple(FleetClass(device(rng.choice(peaks[len(peaks) // 4:]), 10**15, 10**9, 8, name=f"c{i}"),
                               float(s)) for i, s in enumerate(shares))
    return profile, configs, shares, Fleet("small", classes, (), "<test>")


def brute_fleet(profile, configs, fleet, shares, limits: FleetLimits) -> Fraction:
    """The best share-weighted objective over every configuration per class (or sitting out), exact limits."""
    goal = ProfilePlanner(profile).goal
    options = []
    for member in fleet.classes:
        caps = ProfilePlanner(profile).caps(budget_of(member.device))
        options.append([None] + [c for c in configs if fits(c[2], caps)])
    best = Fraction(-1)
    for choice in itertools.product(*options):
        picked = [(s, c) for s, c in zip(shares, choice) if c is not None]
        if limits.ingress_bytes_per_round is not None and sum(
                s * limits.clients_per_round * c[2].upload_bytes for s, c in picked) > limits.ingress_bytes_per_round:
            continue
        if limits.min_coverage is not None and any(
                0 < sum(s for s, c in picked if is_trainable(c[0][b])) < Fraction(limits.min_coverage).limit_denominator()
                for b in range(profile.num_blocks)):
            continue
        best = max(best, sum(s * goal.value(c[0], c[2].trainable_params) for s, c in picked))
    return best / goal.scale


@pytest.mark.parametrize("seed", range(8))
def test_coupled_fleet_equals_brute_force(seed):
    profile, configs, shares, fleet = small_fleet(seed, 3)
    uploads = sorted(c.upload_bytes for *_, c in configs)
    rng = random.Random(seed)
    limits = FleetLimits(ingress_bytes_per_round=rng.choice(uploads[: len(uploads) // 2]) * 2 * 5,
                         clients_per_round=5, min_coverage=rng.choice((None, 0.25, 0.5, 0.7)))
    result = solve_fleet([profile], fleet, limits=limits)
    assert result.status == "OPTIMAL"
    assert abs(result.chosen.score - float(brute_fleet(profile, configs, fleet, shares, limits))) < 1e-9
    used = sum(s * 5 * sol.upload_bytes_per_round for s, sol in zip(shares, result.chosen.solutions) if sol)
    assert used <= limits.ingress_bytes_per_round
    use, own = result.chosen.limit_use, solve_fleet([profile], fleet).chosen.solutions
    assert use.ingress_bytes_per_round == pytest.approx(float(used), rel=1e-12)
    assert use.binds == ([s and s.block_states for s in own] != [s and s.block_states for s in result.chosen.solutions])
    trained = [sum(float(sh) for sh, sol in zip(shares, result.chosen.solutions) if sol and is_trainable(sol.block_states[b]))
               for b in range(profile.num_blocks)]
    assert use.least_coverage == (None if limits.min_coverage is None else min((t for t in trained if t), default=None))


def test_without_limits_the_coupled_answer_is_each_class_own():
    profile, _, _, fleet = small_fleet(3, 4)
    own = solve_fleet([profile], fleet)
    loose = solve_fleet([profile], fleet, limits=FleetLimits(ingress_bytes_per_round=10**12, clients_per_round=1))
    assert [s and s.block_states for s in own.chosen.solutions] == [s and s.block_states for s in loose.chosen.solutions]
    assert own.chosen.limit_use is None and loose.chosen.limit_use.binds is False


@pytest.mark.parametrize("seed", range(4))
def test_integer_model_equals_enumeration_and_is_conservative(seed):
    """CP-SAT on the scaled model equals enumeration of every row choice; whatever the scaled model accepts
    meets the real limits with shares and bytes as given (uneven shares, large uploads: rounding happens)."""
    rng = random.Random(seed)
    shares = [rng.uniform(0.05, 1) for _ in range(3)]
    shares = [s / sum(shares) for s in shares]
    candidates = [[Candidate(("x",), rng.randint(0, 5000), rng.randint(10**6, 10**8),
                             tuple(rng.random() < 0.5 for _ in range(3))) for _ in range(rng.randint(1, 4))]
                  for _ in shares]
    limits = FleetLimits(ingress_bytes_per_round=rng.randint(10**7, 10**9), clients_per_round=rng.randint(1, 20),
                         min_coverage=rng.choice((None, 0.3)))
    data = coupling_data(shares, candidates, limits)
    choices = list(itertools.product(*[[None, *range(len(c))] for c in candidates]))
    best = max(value_of(data, c) for c in choices if feasible(data, c))
    choice, status = solve_coupling(data, limits)
    assert status == "OPTIMAL" and value_of(data, choice) == best
    for c in choices:
        if feasible(data, c):
            used = sum(Fraction(s) * limits.clients_per_round * cands[r].upload_bytes
                       for s, cands, r in zip(shares, candidates, c) if r is not None)
            assert used <= limits.ingress_bytes_per_round


def test_limits_validate_themselves():
    with pytest.raises(ConfigError, match="clients_per_round"):
        FleetLimits(ingress_bytes_per_round=10)
    with pytest.raises(ConfigError, match="min_coverage"):
        FleetLimits(min_coverage=0)


def test_cli_fleet_limits(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["solve", "--device", "jetson-nano", "--min-coverage", "0.5"])
    assert_one_line_error(result, "--min-coverage", "--fleet")
    fleet = Path(__file__).resolve().parents[1] / "profiles" / "fleets" / "mixed-edge.toml"
    out = tmp_path / "plan.json"
    result = runner.invoke(app, ["solve", "--fleet", str(fleet), "--fleet-ingress", "5e7", "--clients-per-round", "10",
                                 "--json", str(out)])
    assert result.exit_code == 0, result.output
    import json

    plan = json.loads(out.read_text())
    assert plan["fleet"]["limits"] == {"ingress_bytes_per_round": 5e7, "clients_per_round": 10}
    used = sum(c["share"] * 10 * c["predicted"]["upload_bytes"] for c in plan["classes"].values() if c["active"])
    assert used <= 5e7
    use = plan["fleet"]["limits_use"]
    assert use["ingress_bytes_per_round"] == pytest.approx(used) and isinstance(use["binds"], bool)
    words = " ".join(result.output.split())
    assert "fleet limits: server ingress 47.68 MiB per round from 10 clients per round" in words
    assert ("they bind" if use["binds"] else "they do not bind") in words
