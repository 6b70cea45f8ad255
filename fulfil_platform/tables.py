"""Terminal tables of the `fulfil` commands: they fit the terminal and never cut a value.

The services' commands (`fulfil backlog`, `fulfil notifications`, …) and the
tools (`fulfil status`, `fulfil dlq list`, …) print through `print_table`, so
every table looks and behaves the same:

- A table's columns are listed in order of importance; those marked `wide`
  appear only with `--wide`. The default columns of every command fit 80
  columns with ids of the usual length, and its `--help` names them
  (`Table.help()`), so an operator knows what `--wide` adds.
- A value is never cut: a column is at least as wide as its widest value and
  as the longest word of its header, so a header wraps between words or not at
  all. Free text (reasons, errors) is marked `wrap` and wraps between words.
  When even the default columns do not fit, the table keeps its width and the
  terminal wraps the lines: nothing is dropped silently.
- Times are shown in UTC with their zone (`2026-11-02 14:00 UTC`), dates as
  ISO dates, numbers right-aligned with thousands separators.

`--json` output never goes through here: scripts read the documents as they are.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any

import typer
from rich import box
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table as RichTable

WideOption = Annotated[
    bool, typer.Option("--wide", help="Show every column (the table may exceed the terminal).")
]
GAP = 2  # blanks between two columns
FREE_TEXT = 24  # `wrap=FREE_TEXT`: reasons and errors wrap, at least this wide


def when(value: datetime | None) -> str:
    """A moment as operators read it: minutes, in UTC, with the zone named."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def money(value: Decimal) -> str:
    """Money as a decimal string with at least two decimals: 95.00, 9.50, 12.3456."""
    normal = value.normalize()
    if normal.as_tuple().exponent > -2:  # type: ignore[operator]
        normal = value.quantize(Decimal("0.01"))
    return format(normal, "f")


def cell(value: Any, numeric: bool = False) -> str:
    """One value as a table shows it."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, datetime):
        return when(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return money(value)
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int) and numeric:
        return f"{value:,}"
    return " ".join(str(value).split())  # one line: newlines and tabs become blanks


@dataclass(frozen=True)
class Column:
    """One column: `key` of the row (or `value` computed from the row), its header, whether
    only `--wide` shows it, and how its values are laid out."""

    key: str
    header: str = ""
    wide: bool = False
    numeric: bool = False  # right-aligned, thousands separators
    # > 0: text that wraps between words instead of widening the table, never narrower
    # than this (nor than its longest word, up to this): reasons, errors, statuses
    wrap: int = 0
    value: Callable[[Mapping[str, Any]], Any] | None = None

    @property
    def label(self) -> str:
        return self.header or self.key.replace("_", " ")

    def text(self, row: Mapping[str, Any]) -> str:
        return cell(self.value(row) if self.value else row.get(self.key), self.numeric)


def col(
    key: str,
    header: str = "",
    *,
    wide: bool = False,
    numeric: bool = False,
    wrap: int = 0,
    value: Callable[[Mapping[str, Any]], Any] | None = None,
) -> Column:
    return Column(key, header, wide, numeric, wrap, value)


@dataclass(frozen=True)
class Table:
    """A table's columns, most important first."""

    columns: tuple[Column, ...]

    def shown(self, wide: bool) -> list[Column]:
        return [c for c in self.columns if wide or not c.wide]

    def help(self) -> str:
        """The paragraph of the command's --help that names the columns."""
        text = "Columns: " + ", ".join(c.label for c in self.columns if not c.wide) + "."
        extra = [c.label for c in self.columns if c.wide]
        if extra:
            text += " --wide adds: " + ", ".join(extra) + "."
        return text


def with_columns(*tables: Table) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: append the columns paragraph of each table to a command's docstring."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        paragraphs = [t.help() for t in tables]
        command.__doc__ = "\n\n".join([inspect.cleandoc(command.__doc__ or ""), *paragraphs])
        return command

    return decorate


def terminal_width() -> int:
    """The terminal's width (COLUMNS wins; 80 when the output is not a terminal)."""
    return Console().width


def _longest_word(text: str) -> int:
    return max((cell_len(word) for word in text.split()), default=0)


def layout(
    least: Sequence[int], natural: Sequence[int], wraps: Sequence[bool], room: int, wide: bool
) -> list[int]:
    """Column widths within `room` (the width left after the gaps): every column gets its
    least width; what is left goes first to free-text columns (fewer lines per row), then
    to headers that would wrap, the shortest first (fewer header lines). When even the
    least widths do not fit, they are kept (the table is then wider than `room`), or
    with `wide` every column gets its natural width: that table is for a wide screen or
    `less -S`, and headers on one line read better there."""
    if wide and sum(least) > room:
        return list(natural)
    widths = list(least)
    left = room - sum(widths)
    order = [i for i, w in enumerate(wraps) if w] + sorted(
        (i for i, w in enumerate(wraps) if not w), key=lambda i: natural[i] - least[i]
    )
    for i in order:
        if left <= 0:
            break
        grow = min(left, natural[i] - widths[i])
        if grow > 0:
            widths[i] += grow
            left -= grow
    return widths


def render(
    table: Table | Sequence[Column],
    rows: Iterable[Mapping[str, Any]],
    *,
    wide: bool = False,
    width: int | None = None,
) -> RichTable:
    """The rich table of `rows` laid out for `width` (default: the terminal's); every
    column at least as wide as its widest value (a free-text column: its longest word)
    and the longest word of its header."""
    columns = table.shown(wide) if isinstance(table, Table) else list(table)
    cells = [[c.text(row) for c in columns] for row in rows]
    least, natural = _column_widths(columns, cells)
    room = (width or terminal_width()) - GAP * max(0, len(columns) - 1)
    widths = layout(least, natural, [c.wrap > 0 for c in columns], room, wide)
    hidden = len(table.columns) - len(columns) if isinstance(table, Table) else 0
    caption = f"--wide shows {hidden} more column{'s' if hidden > 1 else ''}" if hidden else None
    out = RichTable(
        caption=caption,
        caption_justify="left",
        caption_style="dim",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 0, 0, GAP - 1),
        header_style="bold",
    )
    for c, w in zip(columns, widths, strict=True):
        # Fixed widths: rich would otherwise shrink columns below their values when the
        # table is wider than the console. Only a word longer than a wrap column folds.
        out.add_column(c.label, justify="right" if c.numeric else "left", width=w, overflow="fold")
    for line in cells:
        out.add_row(*line)
    return out


def _column_widths(
    columns: Sequence[Column], cells: list[list[str]]
) -> tuple[list[int], list[int]]:
    """Per column, the least width it may take and the width its values would like."""
    least, natural = [], []
    for i, c in enumerate(columns):
        widest = max((cell_len(line[i]) for line in cells), default=1)
        if c.wrap:
            words = max((_longest_word(line[i]) for line in cells), default=1)
            least.append(max(_longest_word(c.label), min(max(words, c.wrap), widest)))
        else:
            least.append(max(_longest_word(c.label), widest))
        natural.append(max(cell_len(c.label), widest))
    return least, natural


def table_width(table: RichTable) -> int:
    return sum(c.width or 0 for c in table.columns) + GAP * max(0, len(table.columns) - 1)


def print_table(
    table: Table | Sequence[Column],
    rows: Iterable[Mapping[str, Any]],
    *,
    title: str,
    wide: bool = False,
    empty: str | None = None,
    width: int | None = None,
) -> None:
    """Print `rows` as a table (or `title: none` / `empty` when there are none) on stdout,
    laid out for `width` (default: the terminal's)."""
    rows = list(rows)
    if not rows:
        typer.echo(empty or f"{title}: none")
        return
    room = width or terminal_width()
    rendered = render(table, rows, wide=wide, width=room)
    # Wider than the terminal only when the columns need it: the lines then wrap in the
    # terminal instead of losing their ends. The title is a line of its own, so a narrow
    # table does not fold it.
    console = Console(width=max(room, table_width(rendered)), soft_wrap=False)
    console.print(title, style="bold", markup=False, highlight=False)
    console.print(rendered)


def histogram(
    title: str, bars: Sequence[tuple[str, int]], *, unit: str = "", width: int | None = None
) -> RichTable:
    """Horizontal bars, one per (label, count), scaled to the largest count and to the
    terminal: the label, the bar, the count and its share of the whole."""
    from rich.bar import Bar

    total = sum(n for _, n in bars)
    largest = max((n for _, n in bars), default=0)
    labels = max((cell_len(label) for label, _ in bars), default=0)
    counts = max((len(f"{n:,}") for _, n in bars), default=1)
    room = (width or terminal_width()) - labels - counts - len(" 100 %") - 3 * GAP
    out = RichTable.grid(padding=(0, GAP, 0, 0))
    out.title, out.title_justify = title, "left"
    out.add_column(justify="left")
    out.add_column(width=max(10, min(50, room)))
    out.add_column(justify="right")
    out.add_column(justify="right")
    for label, n in bars:
        share = f"{100 * n / total:.0f} %" if total else "-"
        out.add_row(label, Bar(max(largest, 1), 0, n), f"{n:,}{unit}", share)
    return out


def print_renderable(renderable: Any) -> None:
    """Print a rich renderable on stdout at the terminal's width."""
    Console(soft_wrap=False).print(renderable)
