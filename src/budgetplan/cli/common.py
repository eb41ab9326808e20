"""Shared CLI plumbing: one-line errors, the console, command registration."""

from __future__ import annotations

import contextlib
import errno
import functools
import importlib
import os
import sys
import tempfile
from pathlib import Path

import typer
from rich.markup import escape

from budgetplan.errors import BudgetplanError
from budgetplan.report.console import ReportConsole
from budgetplan.version import __version__

console = ReportConsole()  # tables print whole: folded in a terminal, plain rows when redirected
error_console = ReportConsole(stderr=True, soft_wrap=True)

# Command modules, each exposing `register(app)`. Missing modules are skipped so optional parts can be absent.
COMMAND_MODULES = (
    "budgetplan.cli.profile_cmd",
    "budgetplan.cli.solve_cmd",
    "budgetplan.cli.run_cmd",
    "budgetplan.cli.flower_cmd",
    "budgetplan.cli.demo_cmd",
    "budgetplan.cli.importance_cmd",
)


def register_all(app: typer.Typer) -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(app)


def fail(message: str, code: int = 2) -> None:
    """Print one line naming the problem and the fix, then exit non-zero."""
    # escape: a message may hold brackets (pip install 'budgetplan[flower]') that are not rich markup
    error_console.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)
    raise typer.Exit(code)


def friendly_errors(func):
    """Turn BudgetplanError (and a few predictable OS errors) into one line and a non-zero exit."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except BudgetplanError as exc:
            fail(str(exc).replace("\n", " "))
        except KeyboardInterrupt:
            fail("interrupted", code=130)
        except MemoryError:
            fail("ran out of memory; use a smaller --batch-size or --seq-len")
        except OSError as exc:
            where = getattr(exc, "filename", "") or "I/O"
            if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
                fail(f"disk full while writing {where}; free space and run the command again")
            fail(f"{exc.strerror or exc} ({where}); check the path and permissions")
        except RecursionError:
            fail("an input is nested too deeply to read; check the files given to this command")
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except Exception as exc:  # a bug, not bad input: one line, the traceback on request
            if os.environ.get("BUDGETPLAN_DEBUG"):
                raise
            fail(f"internal error {type(exc).__name__}: {exc}; please report it (BUDGETPLAN_DEBUG=1 shows the "
                 "traceback)", code=70)

    return wrapper


def echo_json(text: str) -> None:
    sys.stdout.write(text + "\n")


STDOUT = "-"  # `--json -`: the JSON on stdout, and nothing else there
JSON_HELP = "write the {what} JSON to this file; '-' prints it to stdout alone (tables go to stderr)"


def to_stdout(path: Path | None) -> bool:
    return path is not None and str(path) == STDOUT


@contextlib.contextmanager
def json_output(path: Path | None):
    """While a command runs with `--json -`, everything human (tables, progress) goes to stderr."""
    if not to_stdout(path):
        yield
        return
    console.file = sys.stderr
    try:
        yield
    finally:
        console.file = None  # back to following sys.stdout, as the console was made


def write_json(write, obj, path: Path, what: str) -> None:
    """write(obj, path) for a file; for '-' the very same text goes to stdout (via a scratch file)."""
    if not to_stdout(path):
        write(obj, path)
        console.print(f"{what} written to {escape(str(path))}", highlight=False, soft_wrap=True)
        return
    with tempfile.TemporaryDirectory(prefix="budgetplan-") as scratch:
        out = Path(scratch) / "out.json"
        write(obj, out)
        sys.stdout.write(out.read_text())
    sys.stdout.flush()


def version_callback(value: bool) -> None:
    if value:
        sys.stdout.write(f"budgetplan {__version__}\n")
        raise typer.Exit()
