"""The console every command prints through: tables shown whole at any width or redirected, and progress bars.

rich cuts a cell that does not fit with '…' (and, when output is not a terminal, it assumes 80 columns), so
`budgetplan devices list | grep jetson-orin` found nothing. `ReportConsole.print` fixes that for every table a
report builds, without the reports doing anything:
- in a terminal, columns wrap at spaces, never inside a word or a number ("raspberry-pi-zero-2w", "0.00000213");
  a table whose columns' longest words do not fit side by side prints each row as a block of 'header: cell'
  lines instead;
- when output is not a terminal (pipe, file, CI log), a table prints as plain aligned rows of unlimited width,
  one row per line and a multi-line cell joined with '; ', so grep and cut see whole rows; prose is not wrapped
  either (rich would wrap it at 80 columns).
Progress bars are off where output is not a terminal (pipes, CI logs), where a transient bar would only leave blank
lines, e.g. before a one-line error.
"""

from __future__ import annotations

import contextlib

from rich import box
from rich.cells import cell_len
from rich.console import Console, Group
from rich.measure import Measurement
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.segment import Segment
from rich.table import Table
from rich.text import Text


# --- tables printed whole

CELL_JOIN = "; "  # the lines of a multi-line cell, in plain rows
GAP = "  "  # between plain columns


def _text(cell) -> str:
    """The text of a cell or header without rich markup."""
    return cell.plain if isinstance(cell, Text) else Text.from_markup(str(cell)).plain if cell is not None else ""


def plain(cell) -> str:
    """The text of a cell or header without rich markup, on one line."""
    return CELL_JOIN.join(line.strip() for line in _text(cell).splitlines() if line.strip())


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


def words(table: Table) -> set[str]:
    """Every word and number a table shows (headers and cells): what must never be split across lines."""
    return {w for column in table.columns for cell in (column.header, *column.cells) for w in _text(cell).split()}


def _longest(column, pieces) -> int:
    """The widest word (pieces=str.split) or line (pieces=str.splitlines) of a column's header and cells."""
    return max((cell_len(p) for cell in (column.header, *column.cells) for p in pieces(_text(cell))), default=0)


def rendered_lines(renderable, console: Console) -> list[str]:
    """The lines `renderable` takes in `console`, uncropped, without styles."""
    lines = Segment.split_lines(console.render(renderable, console.options))
    return ["".join(segment.text for segment in line).rstrip() for line in lines]


def splits(table: Table, console: Console) -> bool:
    """Whether the table, drawn in this console, is wider than it or splits a word or number across lines."""
    lines = rendered_lines(table, console)
    if max((len(line) for line in lines), default=0) > console.width:
        return True
    text = "\n".join(lines)
    return any(word not in text for word in words(table))  # a split word is found whole on no line


def fitted(table: Table, console: Console) -> Table:
    """The table with every column wrapping at spaces rather than cutting with '…'. One wider than the terminal
    drops its rules and padding (one space between columns) and gets column widths from its words: each column
    at least its longest word or number, the width left over shared in proportion to what each column's longest
    line needs beyond that."""
    for column in table.columns:
        column.overflow, column.no_wrap = "fold", False
    natural = Measurement.get(console, console.options.update_width(10**6), table).maximum
    if not table.columns or natural <= console.width:
        return table
    table.box, table.padding, table.pad_edge, table.show_edge = box.SIMPLE_HEAD, (0, 0), False, False
    lows = [_longest(c, str.split) for c in table.columns]
    wants = [max(0, _longest(c, str.splitlines) - low) for c, low in zip(table.columns, lows)]
    spare = console.width - (len(table.columns) - 1) - sum(lows)
    if spare < 0:
        return table  # no widths keep every word whole side by side: `shown` prints records
    shares = [spare * want // max(1, sum(wants)) for want in wants]
    for column, low, share in zip(table.columns, lows, shares):
        column.width = low + share
    return table


def records(table: Table) -> Group:
    """A table too wide for the terminal as one block per row: the row's first cell, then 'header: cell' lines
    that wrap at spaces like prose."""
    headers = [plain(c.header).replace(CELL_JOIN, " ") for c in table.columns]
    rows = list(zip(*[[plain(cell) for cell in c.cells] for c in table.columns])) if table.columns else []
    parts = [Text(plain(table.title), style="italic")] if table.title else []
    for row in rows:
        parts.append(Text(f"{headers[0]}: {row[0]}" if headers else "", style="bold"))
        parts += [Text(f"  {header}: {cell}") for header, cell in zip(headers[1:], row[1:])]
    parts += [Text(plain(table.caption), style="dim")] if table.caption else []
    return Group(*parts)


def shown(table: Table, console: Console):
    """What prints for a table in a terminal: the table itself, or its rows as records where even the longest
    words of its columns do not fit side by side."""
    table = fitted(table, console)
    return records(table) if splits(table, console) else table


class ReportConsole(Console):
    """A rich Console whose print() shows tables whole and, when output is redirected, never wraps a line."""

    def print(self, *objects, **kwargs) -> None:  # noqa: A003 - the Console API
        if not self.is_terminal:  # redirected: plain rows, and prose of unlimited width, so grep sees whole lines
            objects = tuple(Text("\n".join(plain_lines(o))) if isinstance(o, Table) else o for o in objects)
            kwargs.setdefault("soft_wrap", True)
        else:
            objects = tuple(shown(o, self) if isinstance(o, Table) else o for o in objects)
        super().print(*objects, **kwargs)

    def rule(self, title="", **kwargs) -> None:
        """A heading line; redirected, the whole title on one line (rich would cut it to 80 columns with '…')."""
        if self.is_terminal:
            super().rule(title, **kwargs)
        else:
            self.print(f"── {title} ──" if title else "─" * 8)


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
