"""Reading budgetplan's JSON and TOML files with one-line errors that say what is wrong and what to do."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

from budgetplan.errors import BudgetplanError


def read_json(path: str | Path, what: str, fix: str, error: type[BudgetplanError]) -> object:
    """Parsed JSON of `path`; `what` names the file ("plan file"), `fix` says how to make a good one."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist; {fix}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" at line {exc.lineno}, column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise error(f"{what} {path} is not valid JSON ({type(exc).__name__}{where}); {fix}") from None


def read_toml(path: str | Path, what: str, fix: str, error: type[BudgetplanError]) -> dict:
    """Parsed TOML of `path`; a syntax error names the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist; {fix}")
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{what} {path} is not valid TOML: {exc}; fix the file at that line") from None
    except UnicodeDecodeError:
        raise error(f"{what} {path} is not UTF-8 text; save it as a TOML file") from None


def check_format(data, kind: str, version: str, origin: str, fix: str, error: type[BudgetplanError]) -> None:
    """Refuse another kind of file and another major schema version."""
    if not isinstance(data, dict) or data.get("kind") != kind:
        raise error(f"{origin} is not a {kind.replace('-', ' ')} file (no \"kind\": \"{kind}\"); {fix}")
    found = str(data.get("schema_version", ""))
    major = version.split(".")[0]
    if found.split(".")[0] != major:
        raise error(f"{origin} has schema version {found or 'none'}; this budgetplan reads {major}.x: {fix}")
