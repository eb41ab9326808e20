"""Progress bars shared by commands (rich). Off where output is not a terminal (pipes, CI logs), where a
transient bar would only leave blank lines, e.g. before a one-line error."""

from __future__ import annotations

import contextlib

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


def progress_bar(console: Console, description: str = "{task.description}") -> Progress:
    return Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True, disable=not console.is_terminal)


@contextlib.contextmanager
def counting_bar(console: Console, description: str):
    """Yields tick(done, total): a bar that appears once the work reports its size."""
    with progress_bar(console, description) as progress:
        task = progress.add_task(description, total=None)

        def tick(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield tick
