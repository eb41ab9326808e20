"""The console every command prints through: tables shown whole at any width or redirected, and progress bars.

rich cuts a cell that does not fit with '…' (and, when output is not a terminal, it assumes 80 columns), so
`budgetplan devices list | grep jetson-orin` found nothing. `ReportConsole.print` fixes that for every table a
report builds, without the reports doing anything:
- in a terminal, every column folds (wraps, and splits a word too long for its column) instead of cutting;
- when output is not a terminal (pipe, file, CI log), a table prints as plain aligned rows of unlimited width,
  one row per line and a multi-line cell joined with '; ', so grep and cut see whole rows.
Progress bars are off where output is not a terminal (pipes, CI logs), where a transient bar would only leave blank
lines, e.g. before a one-line error.
"""

from __future__ import annotations

import contextlib

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.segment import Segment
from rich.table import Table
from rich.text import Text


# --- tables printed whole

CELL_JOIN = "; "  # the lines of a multi-line cell, in plain rows
GAP = "  "  # between plain columns


def plain(cell) -> str:
    """The text of a cell or header without rich markup, on one line."""
    text = cell.plain if isinstance(cell, Text) else Text.from_markup(str(cell)).plain if cell is not None else ""
    return CELL_JOIN.join(line.strip() for line in text.splitlines() if line.strip())


def plain_lines(table: Table) -> list[str]:
    """A table as plain text: title, header, one line per row, caption; columns padded, nothing cut."""
    headers = [plain(c.header).replace(CELL_JOIN, " ") for c in table.columns]
    columns = [[plain(cell) for cell in c.cells] for c in table.columns]
    rows = [list(r) for r in zip(*columns)] if columns else []
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        padded = [cell.rjust(w) if c.justify == "right" else cell.ljust(w)
                  for cell, w, c in zip(cells, widths, table.columns)]
        return GAP.join(padded).rstrip()

    out = [plain(table.title)] if table.title else []
    out += [line(headers)] + [line(r) for r in rows]
    out += [plain(table.caption)] if table.caption else []
    return out


def _longest_word(column) -> int:
    words = [w for cell in (column.header, *column.cells) for w in plain(cell).split()]
    return max((len(w) for w in words), default=0)


def _rendered_width(table: Table, console: Console) -> int:
    lines = Segment.split_lines(console.render(table, console.options))
    return max((Segment.get_line_length(line) for line in lines), default=0)


def foldable(table: Table, console: Console) -> Table:
    """Every column wraps and folds rather than cutting with '…'; a table wider than the terminal drops its
    vertical rules and padding (one space between columns) so that names and numbers stay whole more often."""
    for column in table.columns:
        column.overflow, column.no_wrap = "fold", False
    natural = Measurement.get(console, console.options.update_width(10**6), table).maximum
    if table.columns and natural > console.width:
        table.box, table.padding, table.pad_edge = box.SIMPLE_HEAD, (0, 0), False  # one space between columns
        # the first column (a class or configuration name) gets what the other columns' longest words leave
        others = sum(_longest_word(c) for c in table.columns[1:]) + len(table.columns) - 1
        table.columns[0].min_width = max(0, min(_longest_word(table.columns[0]), console.width - others))
        if _rendered_width(table, console) > console.width:  # rich could not honour it: let rich fold the names
            table.columns[0].min_width = None
    return table


class ReportConsole(Console):
    """A rich Console whose print() shows tables whole (see the module docstring)."""

    def print(self, *objects, **kwargs) -> None:  # noqa: A003 - the Console API
        tables = [o for o in objects if isinstance(o, Table)]
        if tables and not self.is_terminal:
            objects = tuple(Text("\n".join(plain_lines(o))) if isinstance(o, Table) else o for o in objects)
            kwargs.setdefault("soft_wrap", True)  # plain rows keep their full width
        for table in tables:
            foldable(table, self)
        super().print(*objects, **kwargs)


# --- progress bars

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
