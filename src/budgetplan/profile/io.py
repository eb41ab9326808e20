"""Profile JSON: write and read the versioned profile file (spec: docs/profile-format.md)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from budgetplan.errors import PlanError
from budgetplan.files import check_format, read_json
from budgetplan.profile.check import check_profile
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
# Measured all-MiniLM-L6-v2 profiles shipped in the package (assets/NAME-profile.json), named "bundled:NAME" in
# fleet files and on the command line: "bundled:minilm" at batch 32, seq 128, AdamW (the default of `solve`), and
# "bundled:minilm-demo" at the demo's sizes (batch 8, seq 32, AdamW, LoRA ranks 4 and 8, 3 labels), written by
# `budgetplan profile all-minilm-l6-v2 --batch-size 8 --seq-len 32 --lora-ranks 4,8 --num-labels 3 --no-measure
# --json src/budgetplan/assets/minilm-demo-profile.json`.
BUNDLED_PREFIX = "bundled:"
BUNDLED_PROFILE_NAME = "bundled:minilm"
ASSETS_DIR = Path(__file__).resolve().parents[1] / "assets"
BUNDLED_PROFILE_PATH = ASSETS_DIR / "minilm-profile.json"


def bundled_profiles() -> tuple[str, ...]:
    """The names of the bundled profiles, e.g. 'bundled:minilm'."""
    return tuple(sorted(BUNDLED_PREFIX + p.name.removesuffix("-profile.json")
                        for p in ASSETS_DIR.glob("*-profile.json")))


def profile_path(spec: str | Path) -> Path:
    """A profile JSON path, with 'bundled:NAME' meaning the bundled profile of that name (bundled_profiles())."""
    text = str(spec)
    if text in bundled_profiles():
        return ASSETS_DIR / f"{text.removeprefix(BUNDLED_PREFIX)}-profile.json"
    return Path(spec)


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
    data = read_json(path, "profile file", f"create it with 'budgetplan profile MODEL --json {path}'", PlanError,
                     kind=PROFILE_KIND)
    return profile_from_dict(data, origin=f"profile file {path}")
