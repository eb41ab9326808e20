"""Profile JSON: write and read the versioned profile file (spec: docs/profile-format.md)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from budgetplan.errors import PlanError
from budgetplan.files import check_format, read_json
from budgetplan.profile.types import (
    SCHEMA_VERSION,
    BlockProfile,
    ConfigCost,
    Importance,
    ModelInfo,
    ModelProfile,
    PartCost,
    ProfileContext,
)

PROFILE_KIND = "budgetplan-profile"
# The measured all-MiniLM-L6-v2 profile shipped in the package (batch 32, seq 128, AdamW), and its name in
# fleet files and on the command line.
BUNDLED_PROFILE_NAME = "bundled:minilm"
BUNDLED_PROFILE_PATH = Path(__file__).resolve().parents[1] / "assets" / "minilm-profile.json"


def profile_path(spec: str | Path) -> Path:
    """A profile JSON path, with 'bundled:minilm' meaning the bundled profile."""
    return BUNDLED_PROFILE_PATH if str(spec) == BUNDLED_PROFILE_NAME else Path(spec)


def profile_to_dict(profile: ModelProfile) -> dict:
    data = asdict(profile)
    data = {"kind": PROFILE_KIND, **data}
    data["held_hidden"] = [list(h) for h in data["held_hidden"]]
    for config in data["configs"]:
        config["block_states"] = list(config["block_states"])
    return data


def write_profile(profile: ModelProfile, path: str | Path) -> None:
    Path(path).write_text(json.dumps(profile_to_dict(profile), indent=1) + "\n")


def _part(data: dict) -> PartCost:
    return PartCost(**data)


def _states(data: dict) -> dict[str, dict[str, PartCost]]:
    return {state: {boundary: _part(cost) for boundary, cost in by_boundary.items()} for state, by_boundary in data.items()}


def profile_from_dict(data: dict, origin: str = "profile") -> ModelProfile:
    from budgetplan.validate import check_profile  # local: validate imports profile.types and profile.compose

    check_format(data, PROFILE_KIND, SCHEMA_VERSION, origin, "re-run 'budgetplan profile MODEL --json PATH'",
                 PlanError)
    check_profile(data, origin)
    try:
        context = dict(data["context"])
        context["lora_ranks"] = tuple(context["lora_ranks"])
        context["lora_targets"] = tuple(context["lora_targets"])
        blocks = tuple(
            BlockProfile(
                index=b["index"], name=b["name"], states=_states(b["states"]),
                trainable_names={k: tuple(v) for k, v in b["trainable_names"].items()},
            )
            for b in data["blocks"]
        )
        configs = tuple(ConfigCost(**{**c, "block_states": tuple(c["block_states"])}) for c in data["configs"])
        return ModelProfile(
            schema_version=str(data["schema_version"]),
            generator=data["generator"],
            model=ModelInfo(**data["model"]),
            context=ProfileContext(**context),
            pre=_states(data["pre"]),
            post={boundary: _part(cost) for boundary, cost in data["post"].items()},
            blocks=blocks,
            resident_bytes=data["resident_bytes"],
            boundary_bytes=data["boundary_bytes"],
            pre_trainable_names=tuple(data["pre_trainable_names"]),
            post_trainable_names=tuple(data["post_trainable_names"]),
            held_hidden=tuple(tuple(h) for h in data["held_hidden"]),
            held_shared_bytes=tuple(dict(h) for h in data["held_shared_bytes"]),
            held_other_bytes=tuple(data["held_other_bytes"]),
            held_previous_outputs=tuple(bool(h) for h in data.get("held_previous_outputs", ())),
            boundary_sizes=tuple(int(b) for b in data.get("boundary_sizes", ())),
            configs=configs,
            measurement=data.get("measurement", {}),
            importance=_importance(data.get("importance")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise PlanError(f"{origin} is missing or has a malformed field ({exc!s}); "
                        "regenerate it with 'budgetplan profile MODEL --json PATH'") from None


def _importance(data: dict | None) -> Importance | None:
    if data is None:
        return None
    blocks = tuple({str(k): float(v) for k, v in b.items()} for b in data["blocks"])
    return Importance(method=str(data["method"]), data=str(data["data"]), steps=int(data["steps"]),
                      seconds=float(data["seconds"]), blocks=blocks, source=str(data.get("source", "measured")))


def read_profile(path: str | Path) -> ModelProfile:
    data = read_json(path, "profile file", f"create it with 'budgetplan profile MODEL --json {path}'", PlanError)
    return profile_from_dict(data, origin=f"profile file {path}")
