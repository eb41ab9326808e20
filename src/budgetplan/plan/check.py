"""Semantic checks of a plan dict that passed the plan schema: blocks, states, gradient paths, shares, LoRA.

Called by plan/types.py (validate_plan) before any Plan is built; PlanError naming the field otherwise.
"""

from __future__ import annotations

from budgetplan.errors import ConfigError, PlanError
from budgetplan.profile.compose import resolve_states
from budgetplan.profile.types import FROZEN, STATE_NAMES_HINT, is_input_form, lora_rank, state_problem
from budgetplan.validate import check_depth, check_finite, check_lora_context, check_magnitudes, check_shares

PLAN_FIX = "regenerate it with 'budgetplan solve --json PATH'"


def check_plan(data, origin: str = "plan") -> None:
    """Semantics of a plan dict that passed the plan schema: blocks, states, gradient paths, shares, LoRA."""
    check_depth(data, origin, PLAN_FIX)
    check_finite(data, origin, PLAN_FIX)
    check_magnitudes(data, origin, PLAN_FIX)
    check_lora_context(data["context"], origin, PLAN_FIX)
    num_blocks = data["model"]["num_blocks"]
    for name, entry in data["classes"].items():
        if not name.strip():
            raise PlanError(f"{origin}: a class has an empty name; name every class; {PLAN_FIX}")
        if entry["active"]:
            check_class_states(entry["block_states"], entry.get("train_embeddings", False), num_blocks,
                               f"{origin}: classes/{name}/block_states", PLAN_FIX)
            _check_class_lora(entry, f"classes/{name}", origin)
            for rung, step in enumerate(entry.get("ladder", ()), start=1):
                where = f"classes/{name}/ladder/{rung}"
                check_class_states(step["block_states"], entry.get("train_embeddings", False), num_blocks,
                                   f"{origin}: {where}/block_states", PLAN_FIX)
                _check_class_lora(step, where, origin)
    check_shares({name: entry["share"] for name, entry in data["classes"].items()}, origin, PLAN_FIX)


def check_class_states(states, train_embeddings: bool, num_blocks: int, where: str, fix: str) -> None:
    """One known state per block and a valid gradient path (PlanError naming `where`)."""
    if len(states) != num_blocks:
        raise PlanError(f"{where} has {len(states)} states for a model with {num_blocks} blocks; "
                        f"give one state per block; {fix}")
    for index, state in enumerate(states):
        problem = state_problem(state) if not is_input_form(state) else None
        if problem:
            raise PlanError(f"{where}/{index}: {problem}; use {STATE_NAMES_HINT}; {fix}")
    try:
        resolve_states(tuple(states), bool(train_embeddings))
    except ConfigError as exc:
        raise PlanError(f"{where}: no valid gradient path ({exc}); {fix}") from None


def _check_class_lora(entry: dict, where: str, origin: str) -> None:
    """A class's (or a rung's) lora section agrees with its block states; `where` names it in the plan."""
    ranks = {str(i): lora_rank(s) for i, s in enumerate(entry["block_states"]) if lora_rank(s)}
    lora = entry.get("lora")
    if ranks and not lora:
        raise PlanError(f"{origin}: {where} has LoRA blocks but no lora section; {PLAN_FIX}")
    if lora:
        alpha = lora.get("alpha_per_rank")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
            raise PlanError(f"{origin}: {where}/lora/alpha_per_rank = {alpha!r} must be a finite number > 0; "
                            f"{PLAN_FIX}")
        if {k: v for k, v in lora["ranks"].items()} != ranks:
            raise PlanError(f"{origin}: {where}/lora/ranks {lora['ranks']} disagree with the block states "
                            f"{ranks}; {PLAN_FIX}")

