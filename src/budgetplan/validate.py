"""Validation of what enters budgetplan, the checks every stage shares: JSON Schema, depth and finiteness, names,
run options, shares, a run directory's measurements.

A leaf over plain data (dicts, numbers, strings) that imports nothing of the package but errors and files, so any
stage may call it. The checks that need a stage's own vocabulary live beside that stage's type: a profile's in
profile/check.py, a plan's in plan/check.py. Every check raises one line naming the origin, the field and the fix:
PlanError for profile and plan files, ConfigError for options.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from importlib import resources

from budgetplan.errors import ConfigError, PlanError
from budgetplan.files import MAX_DEPTH, depth_of

SHARE_TOLERANCE = 1e-6  # shares of a plan's classes sum to 1 within this (fleet files use the same)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")


# ---- generic -----------------------------------------------------------------------------------------------


@lru_cache(maxsize=None)
def schema(name: str) -> dict:
    return json.loads(resources.files("budgetplan").joinpath(f"schemas/{name}.schema.json").read_text())


def _where(path) -> str:
    return "/".join(str(p) for p in path) or "(top level)"


@lru_cache(maxsize=None)
def _validator_class():
    """Draft 2020-12 where a tuple is an array too: dicts built in-process (to_dict) hold tuples, files lists."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    checker = base.TYPE_CHECKER.redefine("array", lambda _checker, value: isinstance(value, (list, tuple)))
    return jsonschema.validators.extend(base, type_checker=checker)


def check_schema(data, name: str, origin: str, fix: str) -> None:
    """JSON Schema `name` (plan, profile) over `data`; the best-matching error as one line."""
    import jsonschema

    check_depth(data, origin, fix)
    check_finite(data, origin, fix)
    check_magnitudes(data, origin, fix)
    validator = _validator_class()(schema(name))
    error = jsonschema.exceptions.best_match(validator.iter_errors(data))
    if error is not None:
        message = error.message if len(error.message) <= 160 else error.message[:157] + "..."
        raise PlanError(f"{origin}: {message} at {_where(error.absolute_path)}; {fix}")


def check_depth(data, origin: str, fix: str) -> None:
    if depth_of(data) > MAX_DEPTH:
        raise PlanError(f"{origin} is nested more than {MAX_DEPTH} levels deep; {fix}")


def check_finite(data, origin: str, fix: str) -> None:
    """Refuse NaN and infinities anywhere (a file reader refuses them already; this covers dicts built in Python)."""
    stack = [(data, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, float) and not math.isfinite(node):
            raise PlanError(f"{origin}: {_where(path)} is {node} (not finite); {fix}")
        if isinstance(node, dict):
            stack.extend((v, (*path, k)) for k, v in node.items())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, (*path, i)) for i, v in enumerate(node))


# ---- physical bounds ---------------------------------------------------------------------------------------

# Every number budgetplan reads is a size, count, rate or time of a real device or run; beyond these bounds it is a
# typo or a hostile file. Refusing it where it is read keeps every later sum and product exact and finite (FLOPs
# per round = FLOP/s x seconds <= 1e26, a batch's share of it <= 1e30; the frontier's int64 sums fall back to
# exact Python ints). The unit is read off the field's name (units live in the names: peak_bytes, flops_per_s,
# round_deadline_s), so one rule covers every reader: profiles, plans, device and fleet files, importance
# weights, measurements.
UNIT_BOUNDS = {  # unit -> (largest magnitude, what that is, read after "more than")
    "bytes": (2**50, "1 PiB (more memory than any device holds)"),
    "FLOP/s": (1e18, "1e18 FLOP/s (more than any device sustains)"),
    "bit/s": (1e13, "10 Tbit/s (more than any uplink carries)"),
    "FLOPs": (1e30, "1e30 FLOPs (30,000 years of an exaFLOP/s device)"),
    "seconds": (1e8, "1e8 s (about three years)"),
    "params": (2**50, "2**50 parameters (more than any device holds)"),
    "weight": (1e9, "1e9 (weights are relative: rescale them)"),
    None: (2**53, "2**53 (beyond it a number no longer holds every whole number)"),
}
_FIELD = re.compile(r"[a-z][a-z0-9_]*")  # a field name (tensor, state and class names are skipped over)


def unit_of(name) -> str | None:
    """The unit a field's name states: '..._bytes', '..flops_per_s', '..bits_per_s', 'flops_...', '..._s',
    '..._seconds', '..params..', 'weights' / '..importance..' (objective weights); None for names without one
    (counts, shares)."""
    words = name.split("_") if isinstance(name, str) and _FIELD.fullmatch(name) else []
    per_s = words[-2:] == ["per", "s"]
    if "bytes" in words:
        return "bytes"
    if per_s:
        return "FLOP/s" if "flops" in words else "bit/s" if "bits" in words else None
    if "flops" in words:
        return "FLOPs"
    if words[-1:] in (["s"], ["seconds"]):
        return "seconds"
    if "params" in words:
        return "params"
    return "weight" if words == ["weights"] or "importance" in words else None


def magnitude_problem(path, value) -> str | None:
    """Why `value` (a number at `path`, a key or a tuple of keys) cannot be real, or None. The unit is that of the
    nearest key in `path` that names one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    keys = (path,) if isinstance(path, str) else tuple(path)
    unit = next((u for u in map(unit_of, reversed(keys)) if u is not None), None)
    bound, what = UNIT_BOUNDS[unit]
    if math.isfinite(value) and abs(value) <= bound:
        return None
    return f"{_where(keys)} = {value!r} is {'not finite' if not math.isfinite(value) else 'more than ' + what}"


def check_magnitudes(data, origin: str, fix: str, error: type = PlanError, path: tuple = ()) -> None:
    """Every number in `data` (found at `path`) within the physical bound of its unit (UNIT_BOUNDS); `error` naming
    the first one that is not."""
    stack = [(data, tuple(path))]
    while stack:
        node, path = stack.pop()
        problem = magnitude_problem(path, node)
        if problem:
            raise error(f"{origin}: {problem}; {fix}")
        if isinstance(node, dict):
            stack.extend((v, (*path, k)) for k, v in node.items())
        elif isinstance(node, (list, tuple)):
            stack.extend((v, (*path, i)) for i, v in enumerate(node))


def check_name(name, what: str, fix: str) -> str:
    """A plain name (letters, digits, . _ + -; no path separators, no spaces, not empty)."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or ".." in name:
        raise ConfigError(f"{what} {name!r} is not a plain name (letters, digits and . _ + -, starting with a letter "
                          f"or digit); {fix}")
    return name


def check_lora_context(context: dict, origin: str, fix: str) -> None:
    if "lora_alpha_per_rank" not in context:  # optional in hand-made plans (the default applies)
        return
    alpha = context["lora_alpha_per_rank"]
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise PlanError(f"{origin}: context/lora_alpha_per_rank = {alpha!r} must be a finite number > 0; {fix}")


def check_shares(shares: dict, origin: str, fix: str) -> None:
    """Every share in (0, 1], their sum 1 within SHARE_TOLERANCE."""
    for name, share in shares.items():
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
            raise PlanError(f"{origin}: classes/{name}/share = {share!r} must be in (0, 1]; {fix}")
    total = sum(shares.values())
    if abs(total - 1.0) > SHARE_TOLERANCE:
        raise PlanError(f"{origin}: class shares sum to {total:.6g}, not 1; make them add up to 1; {fix}")


# ---- options -----------------------------------------------------------------------------------------------

# What each option may hold (never NaN or infinite): "count" an int >= 1, "rate" a number > 0, "fraction" in
# [0, 1), "tolerance" a number >= 0, "seed" an int >= 0, "labels" an int >= 2 (a classifier needs two classes).
# None (not given) passes every rule.
# (A run's settings carry their own rules: execute/settings.py. These are the other commands' options.)
OPTION_RULES = {
    "--rounds": "count", "--clients": "count", "--local-steps": "count", "--batch-size": "count",
    "--seq-len": "count", "--image-size": "count", "--max-train": "count", "--max-test": "count",
    "--workers": "count", "--lora-rank": "count", "--lr": "rate", "--time-limit": "rate", "--seconds": "rate",
    "--ladder-rungs": "count",
    "--tolerance": "tolerance", "--seed": "seed", "--num-labels": "labels",
}
RULE_TEXT = {"count": "at least 1", "rate": "a positive number", "fraction": "in [0, 1)",
             "tolerance": "a number >= 0", "seed": "a whole number >= 0", "labels": "at least 2"}


def passes(rule: str, value) -> bool:
    if isinstance(value, bool):
        return False
    if rule in ("count", "seed", "labels"):
        return isinstance(value, int) and value >= {"count": 1, "labels": 2, "seed": 0}[rule]
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return False
    return {"rate": value > 0, "fraction": 0 <= value < 1, "tolerance": value >= 0}[rule]


def check_options(values: dict) -> None:
    """Each option name -> value against OPTION_RULES, before any work; ConfigError naming the first bad one."""
    for option, value in values.items():
        rule = OPTION_RULES[option]
        if value is not None and not passes(rule, value):
            raise ConfigError(f"{option} must be {RULE_TEXT[rule]}, got {value!r}; run again with a valid {option}")


def check_seq_len(seq_len: int | None, max_positions: int | None, model: str) -> None:
    """A sequence length the model's position table holds."""
    if seq_len is not None and max_positions is not None and seq_len > max_positions:
        raise ConfigError(f"--seq-len {seq_len}: model {model} has {max_positions} positions; give --seq-len "
                          f"<= {max_positions}")


# ---- run directories ---------------------------------------------------------------------------------------

MEASURED_COUNTS = ("peak_bytes", "flops_forward", "flops_backward", "upload_bytes", "batch_size")


def check_measurements(data, origin: str) -> dict:
    """measurements.json of a run: class -> {counts measured by the run} or {"error": why}; PlanError otherwise."""
    fix = "run the plan again (budgetplan run) to measure it"
    if not isinstance(data, dict):
        raise PlanError(f"{origin} is not a JSON object of class -> measurement; {fix}")
    check_magnitudes(data, origin, fix)
    for name, entry in data.items():
        if isinstance(entry, dict) and set(entry) == {"error"} and isinstance(entry["error"], str):
            continue
        if not isinstance(entry, dict):
            raise PlanError(f"{origin}: {name} is {type(entry).__name__}, not a measurement object; {fix}")
        for key in MEASURED_COUNTS:
            value = entry.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PlanError(f"{origin}: {name}/{key} = {value!r} must be a whole number >= 0; {fix}")
        seq_len = entry.get("seq_len")
        if seq_len is not None and (isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1):
            raise PlanError(f"{origin}: {name}/seq_len = {seq_len!r} must be a whole number >= 1 or null; {fix}")
    return data
