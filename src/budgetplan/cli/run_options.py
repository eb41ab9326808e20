"""The run settings (execute/settings.py) as CLI options, shared by the commands that run a plan (`run`, `export`,
`compare`): one option per setting, generated from its field (flag, default, help), checked against the setting's
rule before the command loads the heavy stack. The one place a setting's name becomes its flag in messages.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING
from typing import Optional

import typer
from typer.models import ArgumentInfo

from budgetplan.errors import ConfigError
from budgetplan.plan.recipe import Recipe
from budgetplan.execute.settings import RunConfig, Setting, SettingError, all_settings, for_plan, plan_value

PLAN = typer.Argument(..., help="plan JSON from 'budgetplan solve'")
FROM_PLAN = " (default: the plan's{})"


def with_run_options(command: Callable, leave_out: tuple[str, ...] = ()) -> Callable:
    """`command` with one option per run setting (but those named in leave_out) after its arguments.

    The command takes `settings`: the options' values by setting name, each already checked against its rule (a
    bad one is refused naming its flag, before anything is read or imported). Errors of settings built inside the
    command name the flag too.
    """
    chosen = [s for s in all_settings() if s.flag and s.name not in leave_out]
    hints = typing.get_type_hints(command)
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation))
           for p in inspect.signature(command).parameters.values() if p.name != "settings"]
    arguments = [p for p in own if isinstance(p.default, ArgumentInfo)]
    options = [p for p in own if p not in arguments]
    params = arguments + [_parameter(s) for s in chosen] + options

    @functools.wraps(command)
    def wrapper(**kwargs):
        values = _checked(chosen, kwargs)  # takes the settings out of kwargs: before they are unpacked
        with flags():
            return command(**kwargs, settings=values)

    wrapper.__signature__ = inspect.Signature(params)
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


def _parameter(item: Setting) -> inspect.Parameter:
    default = ... if item.cli_default is MISSING else item.cli_default
    decls = [f"{item.flag}/--no-{item.flag[2:]}"] if item.value_type is bool else [item.flag]
    help_text = item.meta["help"]
    if item.meta["from_plan"]:  # not given (None): the plan's value, else the CLI default
        help_text += FROM_PLAN.format("" if default is None else f", else {default}")
        default = None
    annotation = Optional[item.value_type] if default is None else item.value_type
    return inspect.Parameter(item.name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation,
                             default=typer.Option(default, *decls, help=help_text))


def _checked(chosen, kwargs: dict) -> dict:
    """The chosen settings' values taken out of a command's keyword arguments, each checked by its own rule
    (an error in the CLI's words: flags())."""
    values = {s.name: kwargs.pop(s.name) for s in chosen}
    with flags():
        for item in chosen:
            item.check(values[item.name])
    return values


@contextlib.contextmanager
def flags():
    """A setting's error in the CLI's words: `--rounds must be at least 1`, not `rounds ...`."""
    try:
        yield
    except SettingError as exc:
        flag = next((s.flag for s in all_settings() if s.name == exc.name and s.flag), exc.name)
        raise ConfigError(f"{exc.named(flag)}; run again with a valid {flag}") from None


def run_config(run_plan, settings: Mapping[str, object], **fixed) -> RunConfig:
    """The RunConfig the options describe (and `fixed`, values a command sets itself); an option not given takes
    the plan's value where its help says so (batch size, optimizer, the plan's recipe), else its CLI default."""
    values = {**settings, **fixed}
    for item in all_settings():
        path = item.meta["from_plan"]
        if values.get(item.name) is None and path and plan_value(run_plan, path) is None:
            values[item.name] = None if item.cli_default is MISSING else item.cli_default
    with flags():
        return for_plan(run_plan, values)


def recipe_settings() -> tuple[Setting, ...]:
    """The run settings a plan's recipe may set (from_plan "recipe.NAME")."""
    return tuple(s for s in all_settings() if s.flag and (s.meta["from_plan"] or "").startswith("recipe."))


def with_recipe_options(command: Callable) -> Callable:
    """`command` with one option per recipe setting (same flag and rule as `run`'s), after its own parameters.

    The command takes `recipe`: a plan Recipe of the options given (an option not given leaves the field unset, so
    the run's default applies); a bad value is refused naming its flag before anything is read.
    """
    chosen = recipe_settings()
    hints = typing.get_type_hints(command)
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation))
           for p in inspect.signature(command).parameters.values() if p.name != "recipe"]
    params = own + [inspect.Parameter(s.name, inspect.Parameter.KEYWORD_ONLY, annotation=Optional[s.value_type],
                                      default=typer.Option(None, s.flag, help=f"recipe: {s.meta['help']} (written "
                                                           "into the plan; default: not set, the run decides)"))
                    for s in chosen]

    @functools.wraps(command)
    def wrapper(**kwargs):
        values = _checked(chosen, kwargs)
        given = {s.meta["from_plan"].split(".", 1)[1]: values[s.name] for s in chosen if values[s.name] is not None}
        return command(**kwargs, recipe=Recipe(**given))

    wrapper.__signature__ = inspect.Signature(params)
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper
