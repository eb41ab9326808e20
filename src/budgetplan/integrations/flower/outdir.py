"""Write a set of files inside one directory and nowhere else: no symlink is ever followed.

Every path is opened relative to a directory descriptor with O_NOFOLLOW, so a symlink planted inside the
directory (or swapped in while writing) cannot redirect a write outside it. Names are relative, made of
plain parts (no "..", no absolute paths). Without `replace` an existing entry is an error; with it an
existing file or symlink is unlinked (the link itself, never its target) and written afresh.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from budgetplan.errors import ConfigError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW


def check_name(name: str) -> tuple[str, ...]:
    """The parts of a relative file name; ConfigError for '..', '.', empty parts or an absolute name."""
    parts = tuple(name.split("/"))
    if PurePosixPath(name).is_absolute() or any(p in ("..", ".", "") or "\\" in p or "\0" in p for p in parts):
        raise ConfigError(f"refusing to write '{name}': file names must stay inside the output directory")
    return parts


def open_root(root: Path, replace: bool) -> int:
    """A descriptor of root (created if absent); refused if root is a symlink or, without replace, not empty."""
    if root.is_symlink():
        raise ConfigError(f"{root} is a symbolic link; give a real directory as OUT_DIR")
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root} exists and is not a directory; choose a new OUT_DIR")
    root.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(root, _DIR_FLAGS)
    except OSError as exc:
        raise ConfigError(f"cannot open {root} ({exc.strerror}); choose another OUT_DIR") from None
    if os.listdir(fd) and not replace:
        os.close(fd)
        raise ConfigError(f"{root} is not empty; choose a new OUT_DIR or pass --force to overwrite the app in it")
    return fd


def _enter(parent: int, part: str, replace: bool, shown: str) -> int:
    """A descriptor of directory `part` under parent, created if absent; a symlink there is never followed."""
    try:
        os.mkdir(part, 0o755, dir_fd=parent)
    except FileExistsError:
        pass
    try:
        return os.open(part, _DIR_FLAGS, dir_fd=parent)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
    info = os.stat(part, dir_fd=parent, follow_symlinks=False)
    if not replace or not stat.S_ISLNK(info.st_mode):
        raise ConfigError(f"{shown} is a symbolic link or a file where the app needs a directory; remove it or "
                          "choose a new OUT_DIR")
    os.unlink(part, dir_fd=parent)  # the link itself, not what it points to
    os.mkdir(part, 0o755, dir_fd=parent)
    return os.open(part, _DIR_FLAGS, dir_fd=parent)


def _write(parent: int, part: str, data: bytes, mode: int, replace: bool, shown: str) -> None:
    if replace:
        try:
            info = os.stat(part, dir_fd=parent, follow_symlinks=False)
        except FileNotFoundError:
            info = None
        if info is not None:
            if stat.S_ISDIR(info.st_mode):
                raise ConfigError(f"{shown} is a directory where the app writes a file; remove it first")
            os.unlink(part, dir_fd=parent)
    try:
        fd = os.open(part, _NEW_FILE, mode, dir_fd=parent)
    except FileExistsError:
        raise ConfigError(f"{shown} already exists; pass --force to replace it") from None
    os.fchmod(fd, mode)  # os.open's mode is reduced by the umask
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def write_tree(root: str | Path, files: Mapping[str, str], replace: bool = False,
               executable: frozenset[str] = frozenset()) -> tuple[Path, ...]:
    """Write {relative name: text} under root without following any symlink; the paths written."""
    root = Path(root)
    checked = {name: check_name(name) for name in files}
    root_fd = open_root(root, replace)
    written = []
    try:
        for name, parts in checked.items():
            fds = [root_fd]
            try:
                for depth, part in enumerate(parts[:-1]):
                    fds.append(_enter(fds[-1], part, replace, str(root.joinpath(*parts[:depth + 1]))))
                mode = 0o755 if name in executable else 0o644
                _write(fds[-1], parts[-1], files[name].encode(), mode, replace, str(root / name))
            finally:
                for fd in fds[1:]:
                    os.close(fd)
            written.append(root / name)
    finally:
        os.close(root_fd)
    return tuple(written)
