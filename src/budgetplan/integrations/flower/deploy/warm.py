"""A Flower SuperExec whose app processes are forked from one warm interpreter.

Flower 1.42 starts a fresh `flwr-clientapp` process for every message a SuperNode receives, and a fresh
`flwr-serverapp` for every run; each imports torch, transformers and budgetplan again and prepares the
model and data, 10-30 s of CPU on a small loaded machine before a step is trained. Run this in place of
`flower-superexec` next to a SuperNode (or SuperLink) started with `--isolation process`:

    python -m budgetplan.integrations.flower.deploy.warm --insecure --runtime-api-address 127.0.0.1:9100

It imports PRELOAD once, then runs Flower's own SuperExec (`flower-superexec`, the same options) with one
change to how a task is started: a ClientApp or ServerApp task runs in a forked child that calls the entry
point the stock executor would exec (`flwr-clientapp ...`, same arguments). Each task still gets its own
process, Runtime API session and exit status; only the imports (and a prepared setup) are shared. Other
task types (simulation, ...) start as Flower starts them. The children stay in this process's group:
signalling the group stops them too.

`--serve CONTROL_DIR [APP_DIR]` is the form `budgetplan flower-local` uses on one host: one interpreter
imports and prepares the app's setup once and forks a SuperExec per SuperLink/SuperNode on request (a
restarted SuperNode's too), so N local nodes cost one import, not N.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from logging import WARNING
import tomllib
from pathlib import Path

from flwr.supercore import log
from flwr.supercore.constant import TASK_TYPE_TO_APPIO_API_ADDRESS_ARG, TASK_TYPE_TO_COMMAND, ExecutorType, TaskType
from flwr.supercore.exit import exit_handler
from flwr.supercore.superexec import run_superexec as superexec_module
from flwr.supercore.superexec.executor import ExecutionSpec, LaunchResult
from flwr.supercore.superexec.executor.subprocess_executor import SubprocessExecutor

from budgetplan.errors import BudgetplanError
from budgetplan.execute.rounds import Setup
from budgetplan.integrations.flower.export import PACKAGE, PLAN_NAME
from budgetplan.integrations.flower.settings import run_config_from_values
from budgetplan.integrations.flower.setups import prepared
from budgetplan.plan import read_plan

FORKED = frozenset({TaskType.CLIENT_APP, TaskType.SERVER_APP})
# What budgetplan's exported ServerApp and ClientApp import (torch, transformers and flwr come with them);
# more modules, comma-separated, in PRELOAD_ENV (flower-local adds peft for a plan with LoRA classes).
PRELOAD = ("budgetplan.integrations.flower.server", "budgetplan.integrations.flower.client")
PRELOAD_ENV = "BUDGETPLAN_WARM_PRELOAD"
POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"  # Flower's default is 1 s between task polls
POLL_DEFAULT_S = "0.2"


def task_argv(spec: ExecutionSpec) -> list[str]:
    """The command line Flower's SubprocessExecutor would start for this task (the same arguments)."""
    argv = [TASK_TYPE_TO_COMMAND[spec.task_type], TASK_TYPE_TO_APPIO_API_ADDRESS_ARG[spec.task_type],
            spec.runtime_api_address, "--token", spec.token]
    if spec.insecure:
        argv.append("--insecure")
    elif spec.root_certificates_path is not None:
        argv += ["--root-certificates", spec.root_certificates_path]
    if spec.parent_pid is not None:
        argv += ["--parent-pid", str(spec.parent_pid)]
    if spec.runtime_dependency_install:
        argv.append("--allow-runtime-dependency-installation")
    return argv


@functools.lru_cache(maxsize=None)
def entry_point(command: str) -> Callable[[], object]:
    """The function behind a console script of the installed Flower (e.g. flwr-clientapp)."""
    found = importlib.metadata.entry_points(group="console_scripts", name=command)
    if not found:
        raise RuntimeError(f"the installed Flower has no '{command}' command; reinstall flwr")
    return next(iter(found)).load()


class ForkExecutor(SubprocessExecutor):
    """Flower's SubprocessExecutor, except that ClientApp and ServerApp tasks run in forked children."""

    def __init__(self) -> None:
        self.children: set[int] = set()

    def launch(self, spec: ExecutionSpec) -> LaunchResult:
        if spec.task_type not in FORKED:
            return super().launch(spec)
        argv = task_argv(spec)
        main = entry_point(argv[0])
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            _run_task(main, argv, spec.suppress_output)
        self.children.add(pid)
        return LaunchResult.accepted()

    def reconcile(self) -> None:
        """Reap finished children (called before every task poll)."""
        for pid in list(self.children):
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done = pid
            if done:
                self.children.discard(pid)

    def close(self) -> None:
        self.reconcile()


def _run_task(main: Callable[[], object], argv: list[str], quiet: bool) -> None:
    """In a forked child: forget the parent's exit handlers and signal handlers, run the app's entry point as
    its command would, and leave with its exit status (os._exit: the parent's atexit work is not ours)."""
    code = 1
    try:
        exit_handler.registered_exit_handlers.clear()  # the parent's: close its Runtime API client, ...
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
            signal.signal(sig, signal.SIG_DFL)
        if quiet:  # as the stock executor: a ServerApp's output reaches `flwr run` through the Runtime API
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
        sys.argv = argv
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - reported like an uncaught exception, then the exit status
        import traceback

        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)


def _fork_executor(executor_type, *args, **kwargs):
    """run_superexec's executor factory, with ForkExecutor for Flower's default (subprocess) executor."""
    if executor_type == ExecutorType.SUBPROCESS:
        return ForkExecutor()
    return _STOCK_GET_EXECUTOR(executor_type, *args, **kwargs)


_STOCK_GET_EXECUTOR = superexec_module.get_executor


def preload(modules: tuple[str, ...] = PRELOAD) -> None:
    """Import `modules` and those PRELOAD_ENV names (comma-separated)."""
    extra = [m.strip() for m in os.environ.get(PRELOAD_ENV, "").split(",") if m.strip()]
    for module in (*modules, *extra):
        importlib.import_module(module)


def superexec(argv: list[str]) -> None:
    """Flower's `flower-superexec` with options argv, its app processes forked from this (warm) interpreter."""
    os.environ.setdefault(POLL_ENV, POLL_DEFAULT_S)
    # Flower's SuperExec takes its executor from this factory; no option selects another local one.
    superexec_module.get_executor = _fork_executor
    from flwr.supercore.cli import flower_superexec

    sys.argv = ["flower-superexec", *argv]
    flower_superexec()


def serve(control: Path, app: Path | None = None, poll_s: float = 0.1) -> None:
    """One warm interpreter for the SuperExecs of several SuperNodes/SuperLinks on one host (a restarted
    SuperNode's included): import PRELOAD once and prepare the exported app's setup (model and data, see
    setups.py), then for each request file control/NAME.json ({"argv": flower-superexec options, "log":
    path}) fork a SuperExec in a session of its own (so signalling its group stops it and its apps) and write
    its pid to control/NAME.pid. Runs until signalled."""
    preload()
    if app is not None:
        _prepare(app)
    children: set[int] = set()
    while True:
        for request in sorted(control.glob("*.json")):
            try:
                spec = json.loads(request.read_text())
            except (OSError, ValueError):
                continue
            request.unlink(missing_ok=True)
            pid = os.fork()
            if pid == 0:
                _run_superexec_child(spec["argv"], spec["log"])
            children.add(pid)
            tmp = control / f"{request.stem}.pid.tmp"
            tmp.write_text(f"{pid}\n")
            tmp.replace(control / f"{request.stem}.pid")
        for pid in list(children):
            if os.waitpid(pid, os.WNOHANG)[0]:
                children.discard(pid)
        time.sleep(poll_s)


def _prepare(app: Path) -> None:
    """The app's setup, so forked app processes find it prepared; a failure is theirs to report."""
    try:
        prepare_app(app)
    except (BudgetplanError, OSError, KeyError, ValueError) as exc:
        log(WARNING, "budgetplan: the warm SuperExec did not prepare the app's setup (%s); each app process "
            "prepares its own", exc)


def prepare_app(app: Path) -> Setup:
    """The setup of an exported app with its pyproject's run config (what its runs use unless overridden)."""
    values = tomllib.loads((app / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    return prepared(read_plan(app / PACKAGE / PLAN_NAME), run_config_from_values(values))


def _run_superexec_child(argv: list[str], log: str) -> None:
    code = 1
    try:
        os.setsid()
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        superexec(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        os._exit(code)


def main(argv: list[str] | None = None) -> None:
    """`--serve CONTROL_DIR [APP_DIR]`: the shared warm interpreter (serve); otherwise one warm
    `flower-superexec` with the given options."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve"] and len(argv) in (2, 3):
        serve(Path(argv[1]), Path(argv[2]) if len(argv) == 3 else None)
        return
    preload()
    superexec(argv)


if __name__ == "__main__":
    main()
