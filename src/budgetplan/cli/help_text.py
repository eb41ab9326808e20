"""Every `--help` reads the same way: its paragraphs whole, what each argument may be, and one example at the end.

A command's docstring is written as prose paragraphs (hard-wrapped in the source) with one paragraph starting
"Example: ". typer keeps a paragraph's line breaks after the first, so a help text broke mid-sentence, and it
prints the docstring before the options, so the example stood at the top. `lay_out_help` rewrites every
command's and group's help once, after registration: each paragraph on one line (rich wraps it to the terminal),
each argument's help as a paragraph ("MODEL: ..."; typer 0.20 under click 8.5 drops argument help from the
Arguments panel), and the example as the epilog, which typer prints after the options.
"""

from __future__ import annotations

import inspect

import typer
from typer.models import ArgumentInfo

EXAMPLE = "Example: "


def _paragraphs(text: str | None) -> list[str]:
    return [" ".join(p.split()) for p in inspect.cleandoc(text or "").split("\n\n") if p.strip()]


def argument_lines(callback) -> list[str]:
    """'NAME: help' for each typer.Argument of a command that has a help text."""
    if callback is None:
        return []
    params = inspect.signature(callback).parameters.values()
    return [f"{(p.default.metavar or p.name).upper()}: {' '.join(p.default.help.split())}"
            for p in params if isinstance(p.default, ArgumentInfo) and p.default.help]


def laid_out(text: str | None, callback=None) -> tuple[str, str | None]:
    """(help, epilog): the paragraphs without the example plus the arguments' help, and the example."""
    paragraphs = _paragraphs(text)
    examples = [p for p in paragraphs if p.startswith(EXAMPLE)]
    body = [p for p in paragraphs if not p.startswith(EXAMPLE)] + argument_lines(callback)
    return "\n\n".join(body), (examples[-1] if examples else None)


def _help_of(info_help, callback) -> str | None:
    return info_help if isinstance(info_help, str) else inspect.getdoc(callback) if callback else None


def lay_out_help(app: typer.Typer) -> None:
    """Rewrite the help of `app`, its commands and its groups (recursively) as the module docstring says."""
    for command in app.registered_commands:
        command.help, command.epilog = laid_out(_help_of(command.help, command.callback), command.callback)
    for group in app.registered_groups:
        lay_out_help(group.typer_instance)
    callback = app.registered_callback.callback if app.registered_callback else None
    app.info.help, app.info.epilog = laid_out(_help_of(app.info.help, callback))
