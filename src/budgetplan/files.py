"""Reading budgetplan's JSON and TOML files with one-line errors that say what is wrong and what to do.

JSON here is strict: NaN, Infinity and numbers that overflow to infinity are refused where they are read
(they are not JSON, and every number budgetplan reads is a finite size, count or rate), and so is nesting too
deep to parse (RecursionError), so no later stage ever sees them.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from pathlib import Path

from budgetplan.errors import BudgetplanError


class _NonFinite(ValueError):
    pass


def _refuse_constant(name: str):
    raise _NonFinite(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(text)
    return value


MAX_DEPTH = 64  # budgetplan's own files nest at most ~8 deep; deeper input is refused before anything walks it


def depth_of(data, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of parsed JSON/TOML (iterative: never recurses), counted up to limit + 1."""
    deepest, stack = 0, [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, (dict, list)):
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return deepest


def loads_strict(text: str):
    """json.loads that refuses NaN / Infinity / overflowing numbers (ValueError) and deep nesting (RecursionError)."""
    data = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    if depth_of(data) > MAX_DEPTH:
        raise RecursionError("nested too deeply")
    return data


# ---- kinds of file --------------------------------------------------------------------------------------------

# Every kind of file or directory budgetplan writes, and the commands that take it: a command given one of another
# kind says which kind it got and where that goes (other_kind), instead of "does not exist" or a parser's error.
KINDS = {
    "budgetplan-profile": "a budgetplan profile (it goes to 'budgetplan solve --profile', 'importance --profile' or "
                          "'compare --profile')",
    "budgetplan-plan": "a budgetplan plan (it goes to 'budgetplan run', 'export', 'compare' or 'plan show')",
    "run-dir": "a run directory (it goes to 'budgetplan verify' or 'run --resume --out')",
    "flower-app": "an exported Flower app (it goes to 'budgetplan flower-local' or 'flwr run')",
    "hf-model": "a Hugging Face model directory (it goes to 'budgetplan profile' or 'importance')",
    "torch": "a torch file (a model.pt goes to 'budgetplan profile'; a checkpoint.pt belongs in its run directory)",
    "device": "a device file (it goes to 'budgetplan solve --device-file' or 'devices show --device-file')",
    "fleet": "a fleet file (it goes to 'budgetplan solve --fleet')",
    "importance": "an importance weights file (it goes to 'budgetplan solve --importance')",
}
_SNIFF_BYTES = 1 << 20  # enough of any budgetplan file to tell its kind; larger files are told by their start
_KIND_FIELD = re.compile(rb'"kind"\s*:\s*"([A-Za-z0-9_-]{1,64})"')


def kind_of_data(data) -> str | None:
    """The KINDS key of parsed JSON/TOML, or None when it is none of them."""
    if not isinstance(data, dict):
        return None
    if data.get("kind") in KINDS:
        return data["kind"]
    if "memory_bytes" in data and "flops_per_s" in data:
        return "device"
    if "classes" in data and "models" in data:
        return "fleet"
    return "importance" if set(data) == {"weights"} else None


def kind_of(path: str | Path) -> str | None:
    """The KINDS key of what is at `path` (read by its start only), or None when it is none of them or unreadable."""
    path = Path(path)
    try:
        if path.is_dir():
            names = {p.name for p in path.iterdir()}
            return ("run-dir" if {"plan.json", "run.json"} <= names or "rounds.jsonl" in names else
                    "flower-app" if "pyproject.toml" in names and "budgetplan_flower_app" in names else
                    "hf-model" if "config.json" in names else None)
        with path.open("rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError:
        return None
    if head.startswith(b"PK\x03\x04"):
        return "torch"
    found = _KIND_FIELD.search(head[:4096])
    if found and found.group(1).decode() in KINDS:
        return found.group(1).decode()
    try:
        text = head.decode()
        return kind_of_data(json.loads(text) if text.lstrip().startswith(("{", "[")) else tomllib.loads(text))
    except (ValueError, RecursionError):
        return None


def other_kind(path: str | Path, wanted: str, own: str | None = None) -> str | None:
    """'PATH is <another kind> (where it goes), not <wanted>' when `path` holds a known kind other than `own`
    (the KINDS key of what was wanted), else None."""
    kind = kind_of(path)
    return None if kind is None or kind == own else f"{path} is {KINDS[kind]}, not {wanted}"


def refuse_other_kind(data, own: str, origin: str, wanted: str, fix: str, error: type[BudgetplanError]) -> None:
    """Raise `error` ('ORIGIN is <kind> (where it goes), not <wanted>; fix') when parsed `data` is a known kind of
    budgetplan file other than `own`; return otherwise (what is wrong inside a file of its own kind is the
    reader's to say)."""
    found = kind_of_data(data)
    if found is not None and found != own:
        raise error(f"{origin} is {KINDS[found]}, not {wanted}; {fix}")


def read_json(path: str | Path, what: str, fix: str, error: type[BudgetplanError], kind: str | None = None) -> object:
    """Parsed JSON of `path`; `what` names the file ("plan file"), `fix` says how to make a good one, `kind` is the
    KINDS key of the file wanted (a file of another kind is named as such)."""
    path = Path(path)
    if not path.is_file():
        raise error(_missing(path, what, fix))
    try:
        return loads_strict(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        wrong = other_kind(path, f"a {what}", own=kind)
        if wrong:
            raise error(f"{wrong}; {fix}") from None
        where = ""
        if isinstance(exc, json.JSONDecodeError):
            early = "; it ends early: truncated?" if not exc.doc.rstrip().endswith(("}", "]")) else ""
            where = f" at line {exc.lineno}, column {exc.colno}{early}"
        raise error(f"{what} {path} is not valid JSON ({type(exc).__name__}{where}); {fix}") from None
    except _NonFinite as exc:
        raise error(f"{what} {path} holds the number {exc} (not finite; JSON has no NaN or Infinity); {fix}") from None
    except RecursionError:
        raise error(f"{what} {path} is nested too deeply to read; {fix}") from None


def read_toml(path: str | Path, what: str, fix: str, error: type[BudgetplanError], kind: str | None = None) -> dict:
    """Parsed TOML of `path`; a syntax error names the file and the line (`kind` as in read_json)."""
    path = Path(path)
    if not path.is_file():
        raise error(_missing(path, what, fix))
    try:
        data = tomllib.loads(path.read_text())
        if depth_of(data) > MAX_DEPTH:
            raise RecursionError("nested too deeply")
        return data
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        wrong = other_kind(path, f"a {what}", own=kind)
        if wrong:
            raise error(f"{wrong}; {fix}") from None
        if isinstance(exc, UnicodeDecodeError):
            raise error(f"{what} {path} is not UTF-8 text; save it as a TOML file") from None
        raise error(f"{what} {path} is not valid TOML: {exc}; fix the file at that line") from None
    except RecursionError:
        raise error(f"{what} {path} is nested too deeply to read; {fix}") from None


def _missing(path: Path, what: str, fix: str) -> str:
    """Why `path` cannot be read as a `what`: it does not exist, or it is a directory (of which kind)."""
    if not path.exists():
        return f"{what} {path} does not exist; {fix}"
    return f"{other_kind(path, f'a {what}') or f'{what} {path} is a directory, not a file'}; {fix}"


def check_format(data, kind: str, version: str, origin: str, fix: str, error: type[BudgetplanError]) -> None:
    """Refuse another kind of file (naming the kind it is and where it goes) and another major schema version."""
    if not isinstance(data, dict) or data.get("kind") != kind:
        found = kind_of_data(data)
        if found is not None:
            raise error(f"{origin} is {KINDS[found]}, not a {kind.replace('-', ' ')}; {fix}")
        raise error(f"{origin} is not a {kind.replace('-', ' ')} file (no \"kind\": \"{kind}\"); {fix}")
    found = str(data.get("schema_version", ""))
    major = version.split(".")[0]
    if found.split(".")[0] != major:
        raise error(f"{origin} has schema version {found or 'none'}; this budgetplan reads {major}.x: {fix}")
