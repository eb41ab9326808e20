"""Validation of everything that enters budgetplan: profile and plan JSON, run options, names.

One layer, run where a file or an option enters (the readers and the settings call it), so no later stage sees a
negative byte count, a NaN rate, a state per block too many or a class without a gradient path. Every check is a
function over plain data (dicts, numbers, strings) and raises one line naming the origin, the field and the fix:
PlanError for profile and plan files, ConfigError for options.

The JSON Schemas (schemas/*.schema.json) state the shape; the semantic checks here state what a schema cannot:
counts that must agree with each other, the state names (profile.types.state_problem), the gradient path
(profile.compose.resolve_states), shares that sum to one.
"""

from __future__ import annotations

import json
import math
import re
from functools import lru_cache
from importlib import resources

from budgetplan.errors import ConfigError, PlanError
from budgetplan.files import MAX_DEPTH, depth_of
from budgetplan.profile.types import (
    FROZEN_OUTSIDE,
    INPUT_GRAD,
    NO_INPUT_GRAD,
    PRE_INT8,
    TRAINED,
    boundaries_of,
    lora_rank,
    is_input_form,
    state_problem,
)

PROFILE_FIX = "regenerate it with 'budgetplan profile MODEL --json PATH'"
PLAN_FIX = "regenerate it with 'budgetplan solve --json PATH'"
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


def check_name(name, what: str, fix: str) -> str:
    """A plain name (letters, digits, . _ + -; no path separators, no spaces, not empty)."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or ".." in name:
        raise ConfigError(f"{what} {name!r} is not a plain name (letters, digits and . _ + -, starting with a letter "
                          f"or digit); {fix}")
    return name


# ---- profiles ----------------------------------------------------------------------------------------------


def check_profile(data, origin: str = "profile") -> None:
    """Schema and semantics of a profile dict (as read from JSON); PlanError naming the field otherwise."""
    check_schema(data, "profile", origin, PROFILE_FIX)
    context = data["context"]
    blocks = data["blocks"]
    num_blocks = data["model"]["num_blocks"]
    if len(blocks) != num_blocks:
        _profile_error(origin, "blocks", f"has {len(blocks)} blocks but model/num_blocks is {num_blocks}")
    _check_lora_context(context, origin, PROFILE_FIX)
    states = list(blocks[0]["states"])
    for index, block in enumerate(blocks):
        _check_block(block, index, states, context, origin)
    _check_part_states(data["pre"], "pre", {FROZEN_OUTSIDE: (NO_INPUT_GRAD,)}
                       | ({TRAINED: (NO_INPUT_GRAD,)} if context["train_embeddings"] else {}), origin)
    missing = {INPUT_GRAD, NO_INPUT_GRAD} - set(data["post"])
    if missing:
        _profile_error(origin, "post", f"has no {', '.join(sorted(missing))} cost")
    _check_held(data, num_blocks, origin)
    for i, config in enumerate(data["configs"]):
        if len(config["block_states"]) != num_blocks or not set(config["block_states"]) <= set(states):
            _profile_error(origin, f"configs/{i}/block_states", f"{config['block_states']} is not one profiled "
                                                                f"state per block ({num_blocks} blocks)")
    _check_importance(data.get("importance"), num_blocks, origin)


def _profile_error(origin: str, where: str, problem: str):
    raise PlanError(f"{origin}: {where} {problem}; {PROFILE_FIX}")


def _check_lora_context(context: dict, origin: str, fix: str) -> None:
    if "lora_alpha_per_rank" not in context:  # optional in hand-made plans (the default applies)
        return
    alpha = context["lora_alpha_per_rank"]
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha) or alpha <= 0:
        raise PlanError(f"{origin}: context/lora_alpha_per_rank = {alpha!r} must be a finite number > 0; {fix}")


def _check_block(block: dict, index: int, states: list[str], context: dict, origin: str) -> None:
    where = f"blocks/{index}"
    if block["index"] != index:
        _profile_error(origin, f"{where}/index", f"is {block['index']}, not its position {index}")
    if list(block["states"]) != states:
        _profile_error(origin, f"{where}/states", f"are {list(block['states'])}, but block 0 has {states}: every "
                                                  "block is profiled in the same states")
    _check_part_states(block["states"], where, {s: boundaries_of(s) for s in states if state_problem(s) is None},
                       origin)  # a bad state name is refused by _check_part_states itself
    ranks = set(context["lora_ranks"])
    for state in states:
        rank = lora_rank(state)
        if rank is not None and rank not in ranks:
            _profile_error(origin, f"{where}/states/{state}",
                           f"has rank {rank}, not in context/lora_ranks {sorted(ranks)}")
    for state in block["trainable_names"]:
        if state not in states:
            _profile_error(origin, f"{where}/trainable_names/{state}", "names a state the block was not profiled in")


def _check_part_states(states: dict, where: str, required: dict, origin: str) -> None:
    for state in states:
        problem = (state_problem(state) if where != "pre" or state in (FROZEN_OUTSIDE, PRE_INT8, TRAINED)
                   else "not a pre state")
        if problem:
            _profile_error(origin, f"{where}/states/{state}", f"is not a block state ({problem})")
    for state, boundaries in required.items():
        missing = [b for b in boundaries if b not in states.get(state, {})]
        if missing:
            _profile_error(origin, f"{where}/states/{state}", f"has no {', '.join(missing)} cost")


def _check_held(data: dict, num_blocks: int, origin: str) -> None:
    for key in ("held_hidden", "held_shared_bytes", "held_other_bytes"):
        if len(data[key]) not in (0, num_blocks):
            _profile_error(origin, key, f"has {len(data[key])} entries for {num_blocks} blocks (give one per block)")
    for index, held in enumerate(data["held_hidden"]):
        if any(j > index for j in held):
            _profile_error(origin, f"held_hidden/{index}", f"{held} names a block input after block {index}")


def _check_importance(importance, num_blocks: int, origin: str) -> None:
    if importance is not None and len(importance["blocks"]) != num_blocks:
        _profile_error(origin, "importance/blocks", f"has {len(importance['blocks'])} entries for {num_blocks} blocks")


# ---- plans -------------------------------------------------------------------------------------------------


def check_plan(data, origin: str = "plan") -> None:
    """Semantics of a plan dict that passed the plan schema: blocks, states, gradient paths, shares, LoRA."""
    check_depth(data, origin, PLAN_FIX)
    check_finite(data, origin, PLAN_FIX)
    _check_lora_context(data["context"], origin, PLAN_FIX)
    num_blocks = data["model"]["num_blocks"]
    for name, entry in data["classes"].items():
        if not name.strip():
            raise PlanError(f"{origin}: a class has an empty name; name every class; {PLAN_FIX}")
        if entry["active"]:
            check_class_states(entry["block_states"], entry.get("train_embeddings", False), num_blocks,
                               f"{origin}: classes/{name}/block_states", PLAN_FIX)
            _check_class_lora(entry, name, origin)
    check_shares({name: entry["share"] for name, entry in data["classes"].items()}, origin, PLAN_FIX)


def check_class_states(states, train_embeddings: bool, num_blocks: int, where: str, fix: str) -> None:
    """One known state per block and a valid gradient path (PlanError naming `where`)."""
    from budgetplan.profile.compose import resolve_states

    if len(states) != num_blocks:
        raise PlanError(f"{where} has {len(states)} states for a model with {num_blocks} blocks; "
                        f"give one state per block; {fix}")
    for index, state in enumerate(states):
        problem = state_problem(state) if not is_input_form(state) else None
        if problem:
            raise PlanError(f"{where}/{index}: {problem}; use {_hint()}; {fix}")
    try:
        resolve_states(tuple(states), bool(train_embeddings))
    except ConfigError as exc:
        raise PlanError(f"{where}: no valid gradient path ({exc}); {fix}") from None


def _hint() -> str:
    from budgetplan.profile.types import STATE_NAMES_HINT

    return STATE_NAMES_HINT


def _check_class_lora(entry: dict, name: str, origin: str) -> None:
    ranks = {str(i): lora_rank(s) for i, s in enumerate(entry["block_states"]) if lora_rank(s)}
    lora = entry.get("lora")
    if ranks and not lora:
        raise PlanError(f"{origin}: classes/{name} has LoRA blocks but no lora section; {PLAN_FIX}")
    if lora:
        alpha = lora.get("alpha_per_rank")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
            raise PlanError(f"{origin}: classes/{name}/lora/alpha_per_rank = {alpha!r} must be a finite number > 0; "
                            f"{PLAN_FIX}")
        if {k: v for k, v in lora["ranks"].items()} != ranks:
            raise PlanError(f"{origin}: classes/{name}/lora/ranks {lora['ranks']} disagree with the block states "
                            f"{ranks}; {PLAN_FIX}")


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
OPTION_RULES = {
    "--rounds": "count", "--clients": "count", "--clients-per-round": "count", "--local-steps": "count",
    "--batch-size": "count", "--seq-len": "count", "--image-size": "count", "--max-train": "count",
    "--max-test": "count", "--workers": "count", "--lora-rank": "count", "--lr": "rate",
    "--lora-lr-scale": "rate", "--head-lr-scale": "rate",
    "--alpha": "rate",
    "--client-timeout-s": "rate", "--time-limit": "rate", "--seconds": "rate", "--fail-prob": "fraction",
    "--tolerance": "tolerance", "--seed": "seed", "--num-labels": "labels",
}
RULE_TEXT = {"count": "at least 1", "rate": "a positive number", "fraction": "in [0, 1)",
             "tolerance": "a number >= 0", "seed": "a whole number >= 0", "labels": "at least 2"}


def _passes(rule: str, value) -> bool:
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
        if value is not None and not _passes(rule, value):
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
