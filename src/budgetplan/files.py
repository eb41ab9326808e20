"""Reading budgetplan's JSON and TOML files with one-line errors that say what is wrong and what to do.

JSON here is strict: NaN, Infinity and numbers that overflow to infinity are refused where they are read
(they are not JSON, and every number budgetplan reads is a finite size, count or rate), and so is nesting too
deep to parse (RecursionError), so no later stage ever sees them.
"""

from __future__ import annotations

import json
import math
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


def read_json(path: str | Path, what: str, fix: str, error: type[BudgetplanError]) -> object:
    """Parsed JSON of `path`; `what` names the file ("plan file"), `fix` says how to make a good one."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist; {fix}")
    try:
        return loads_strict(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" at line {exc.lineno}, column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise error(f"{what} {path} is not valid JSON ({type(exc).__name__}{where}); {fix}") from None
    except _NonFinite as exc:
        raise error(f"{what} {path} holds the number {exc} (not finite; JSON has no NaN or Infinity); {fix}") from None
    except RecursionError:
        raise error(f"{what} {path} is nested too deeply to read; {fix}") from None


def read_toml(path: str | Path, what: str, fix: str, error: type[BudgetplanError]) -> dict:
    """Parsed TOML of `path`; a syntax error names the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist; {fix}")
    try:
        data = tomllib.loads(path.read_text())
        if depth_of(data) > MAX_DEPTH:
            raise RecursionError("nested too deeply")
        return data
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} {path} is not valid TOML: {exc}; fix the file at that line") from None
    except UnicodeDecodeError:
        raise error(f"{what} {path} is not UTF-8 text; save it as a TOML file") from None
    except RecursionError:
        raise error(f"{what} {path} is nested too deeply to read; {fix}") from None


def check_format(data, kind: str, version: str, origin: str, fix: str, error: type[BudgetplanError]) -> None:
    """Refuse another kind of file and another major schema version."""
    if not isinstance(data, dict) or data.get("kind") != kind:
        raise error(f"{origin} is not a {kind.replace('-', ' ')} file (no \"kind\": \"{kind}\"); {fix}")
    found = str(data.get("schema_version", ""))
    major = version.split(".")[0]
    if found.split(".")[0] != major:
        raise error(f"{origin} has schema version {found or 'none'}; this budgetplan reads {major}.x: {fix}")
