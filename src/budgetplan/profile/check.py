"""Semantic checks of a profile dict (as read from JSON), beyond what the profile schema states.

Counts that must agree with each other, the state names (profile.types.state_problem), one cost per boundary a
state needs. Called by profile/io.py before any ModelProfile is built; PlanError naming the field otherwise.
"""

from __future__ import annotations

from budgetplan.errors import PlanError
from budgetplan.profile.types import (
    FROZEN_OUTSIDE, INPUT_GRAD, NO_INPUT_GRAD, PRE_INT8, TRAINED, boundaries_of, lora_rank, state_problem,
)
from budgetplan.validate import check_lora_context, check_schema

PROFILE_FIX = "regenerate it with 'budgetplan profile MODEL --json PATH'"


def check_profile(data, origin: str = "profile") -> None:
    """Schema and semantics of a profile dict (as read from JSON); PlanError naming the field otherwise."""
    check_schema(data, "profile", origin, PROFILE_FIX)
    context = data["context"]
    blocks = data["blocks"]
    num_blocks = data["model"]["num_blocks"]
    if len(blocks) != num_blocks:
        _profile_error(origin, "blocks", f"has {len(blocks)} blocks but model/num_blocks is {num_blocks}")
    check_lora_context(context, origin, PROFILE_FIX)
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
    for key in ("held_hidden", "held_shared_bytes", "held_other_bytes", "held_previous_outputs"):
        if len(data.get(key, ())) not in (0, num_blocks, num_blocks + 1):
            _profile_error(origin, key, f"has {len(data[key])} entries for {num_blocks} blocks (give one per block, "
                                        "and one for the head's start)")
    if len(data.get("boundary_sizes", ())) not in (0, num_blocks + 1):
        _profile_error(origin, "boundary_sizes", f"has {len(data['boundary_sizes'])} entries for {num_blocks} "
                                                 "blocks (give one per block input and one for the head's input)")
    for index, held in enumerate(data["held_hidden"]):
        if any(j > index for j in held):
            _profile_error(origin, f"held_hidden/{index}", f"{held} names a block input after block {index}")


def _check_importance(importance, num_blocks: int, origin: str) -> None:
    if importance is not None and len(importance["blocks"]) != num_blocks:
        _profile_error(origin, "importance/blocks", f"has {len(importance['blocks'])} entries for {num_blocks} blocks")
