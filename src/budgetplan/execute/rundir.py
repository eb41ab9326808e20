"""A run directory's integrity: one owner at a time, checkpoints written atomically, one-line errors on reading.

Lock: `run.lock` holds the owner's pid, host and start time, and the owner holds an exclusive flock on it for the
whole run. The kernel drops a flock when its process dies (even by SIGKILL), so a lock file without a flock is
stale: the next run or resume takes it over and says whose it was. A second run while the owner lives is refused
with one line naming it. (Without fcntl, e.g. on Windows, runs are not locked.)

Checkpoints: written to a temporary file and renamed over the previous one, so a kill or a full disk leaves the
previous checkpoint intact; a full disk is reported as such. Reading one never unpickles code (weights_only).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import pickle
import socket
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from budgetplan.errors import ConfigError, first_line
from budgetplan.execute.records import Measurement, RoundRecord, measurements_from_dict, rounds_from_json
from budgetplan.files import loads_strict

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None

LOCK = "run.lock"
DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


class RunDirError(ConfigError):
    """A run directory is locked by another run, or holds a checkpoint or settings file that cannot be read."""


def _holder_text(path: Path) -> str:
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    if not isinstance(holder, dict) or "pid" not in holder:
        return "another process"
    return f"pid {holder.get('pid')} on {holder.get('host', '?')} since {holder.get('started_utc', '?')}"


def _open_locked(path: Path) -> int | None:
    """A descriptor of `path` holding its exclusive flock, or None when another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the owner removed the file between our open and flock: lock the new one


@contextlib.contextmanager
def locked(run_dir: str | Path, on_event: Callable[[str, dict], None] | None = None):
    """Own `run_dir` for the block's duration; RunDirError (one line naming the owner) when another run owns it."""
    run_dir = Path(run_dir)
    if fcntl is None:  # pragma: no cover
        yield
        return
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    fd = _open_locked(path)
    if fd is None:
        raise RunDirError(f"run directory {run_dir} is in use by {_holder_text(path)} (see {path}); wait for that run "
                          "to finish or stop it, or choose another --out")
    failed = True
    try:
        stale = _holder_text(path) if path.stat().st_size else None
        if stale is not None and on_event is not None:
            on_event("stale_lock", {"run_dir": str(run_dir), "holder": stale})
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield
        failed = False
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # still under our flock: a waiting process sees the file replaced and retries
        os.close(fd)
        if created and failed:
            with contextlib.suppress(OSError):
                run_dir.rmdir()  # a run that failed before writing anything leaves no directory behind


def write_checkpoint(run_dir: Path, name: str, payload: dict, round_index: int) -> None:
    """torch.save `payload` to run_dir/name atomically; a full disk is one line that says nothing is lost."""
    tmp = run_dir / (name + ".tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, run_dir / name)
    except (OSError, RuntimeError) as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if _disk_full(exc):
            raise RunDirError(f"disk full while writing the round-{round_index} checkpoint in {run_dir}; nothing is "
                              "lost (the previous checkpoint is intact); free space and run again with "
                              "--resume") from None
        raise


def _disk_full(exc: Exception) -> bool:
    if isinstance(exc, OSError):
        return exc.errno in DISK_FULL
    text = str(exc)  # torch's zip writer: "[enforce fail at inline_container.cc:...] unexpected pos", "write failed"
    return "unexpected pos" in text or "write failed" in text or "No space left" in text


@dataclass(frozen=True)
class Checkpoint:
    """A run after its last finished round, as checkpoint.pt holds it (history and measurements as JSON text)."""

    round: int
    global_state: dict
    history: tuple[RoundRecord, ...]
    measurements: dict[str, Measurement]


def read_checkpoint(path: Path) -> Checkpoint:
    """The checkpoint at `path`; one line naming the file and what to do when it cannot be read."""
    fix = ("restore it from a copy, or start the run again without --resume in a new --out "
           "(a checkpoint is written after every round)")
    if not path.is_file() or path.stat().st_size == 0:
        raise RunDirError(f"checkpoint {path} is missing or empty; {fix}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        what = "holds pickled Python objects, which budgetplan never loads" if "weights_only" in str(exc) \
            or "global" in str(exc).lower() else "is not a torch checkpoint"
        raise RunDirError(f"checkpoint {path} {what}; {fix}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, AttributeError, ImportError) as exc:
        first = first_line(exc, 100)
        raise RunDirError(f"checkpoint {path} is truncated or corrupt ({first}); {fix}") from None
    keys = ("round", "global_state", "history", "measurements")
    if not isinstance(data, dict) or any(k not in data for k in keys) or not isinstance(data["global_state"], dict):
        raise RunDirError(f"checkpoint {path} is not a budgetplan checkpoint (needs {', '.join(keys)}); {fix}")
    try:
        history, measurements = loads_strict(data["history"]), loads_strict(data["measurements"])
    except (TypeError, ValueError, RecursionError):
        raise RunDirError(f"checkpoint {path} has an unreadable history or measurements; {fix}") from None
    if not isinstance(data["round"], int) or not isinstance(history, list):
        raise RunDirError(f"checkpoint {path} has a malformed round or history; {fix}")
    try:
        return Checkpoint(data["round"], data["global_state"], rounds_from_json(history),
                          measurements_from_dict(measurements))
    except (KeyError, TypeError, ValueError, AttributeError):
        raise RunDirError(f"checkpoint {path} has a malformed history or measurements; {fix}") from None


def read_run_settings(path: Path, keys: tuple[str, ...]) -> dict:
    """run.json of a run directory; one line when it is missing, not JSON or lacks a key."""
    fix = "--resume needs the run.json the run wrote; restore it, or start again without --resume in a new --out"
    try:
        data = loads_strict(path.read_text())
    except FileNotFoundError:
        raise RunDirError(f"{path} is missing; {fix}") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise RunDirError(f"{path} is not valid JSON ({type(exc).__name__}); {fix}") from None
    if not isinstance(data, dict) or any(k not in data for k in keys):
        raise RunDirError(f"{path} lacks {', '.join(k for k in keys if not isinstance(data, dict) or k not in data)}; "
                          f"{fix}")
    return data
