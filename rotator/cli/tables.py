"""Plain tables, as kubectl prints them: upper-case headers, columns two spaces apart, no borders, one line per row.

A cell is never wrapped or broken (a plan id stays whole); only the column marked `cut` (the free-text notes) is
shortened to fit the terminal, ending in an ellipsis, and only when not `wide`. Rendering is string joins, no rich:
`status` of 10,000 plans renders in a few milliseconds.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass

# Line breaks, tabs and other control characters (ANSI escapes included) would break a row over several lines
# or move the cursor: each run of them becomes one space.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
# A cut column keeps at least this many characters, even when the other columns already fill the line (a plan id
# of 30 characters still fits a status table in 80 columns; a longer one widens the line, it is never broken).
MIN_CUT_WIDTH = 8


@dataclass(frozen=True)
class Column:
    header: str
    right: bool = False  # numbers line up on the right
    cut: bool = False  # free text: shortened to fit the terminal (unless wide)


def terminal_width() -> int:
    """The terminal's width: COLUMNS if set, else stdout's terminal, else 80 (piped output)."""
    return shutil.get_terminal_size((80, 24)).columns


def _ellipsis() -> str:
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    return "…" if encoding.startswith("utf") else "..."


def one_line(text: object) -> str:
    """`text` as one line: control characters and line breaks become single spaces."""
    value = str(text)
    if value.isprintable():
        return value
    return _CONTROL.sub(" ", value).strip()


def shorten(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    mark = _ellipsis()
    return text[: max(0, width - len(mark))].rstrip() + mark


def render(
    columns: Sequence[Column], rows: Sequence[Sequence[object]], *, width: int | None = None, wide: bool = False
) -> str:
    """The table as text (no trailing newline); `width` defaults to the terminal's."""
    return render_and_cut(columns, rows, width=width, wide=wide)[0]


def render_and_cut(
    columns: Sequence[Column], rows: Sequence[Sequence[object]], *, width: int | None = None, wide: bool = False
) -> tuple[str, bool]:
    """The table as text, and whether a cell was shortened (so the command can say where the full text is)."""
    cut = False
    cells = [[one_line(value) for value in row] for row in rows]
    widths = [len(column.header) for column in columns]
    for row in cells:
        for index, value in enumerate(row):
            if len(value) > widths[index]:
                widths[index] = len(value)
    if not wide:
        limit = terminal_width() if width is None else width
        total = sum(widths) + 2 * (len(columns) - 1)
        for index, column in enumerate(columns):
            if column.cut and total > limit:
                room = max(MIN_CUT_WIDTH, len(column.header), widths[index] - (total - limit))
                if room < widths[index]:
                    total -= widths[index] - room
                    widths[index] = room
                    cut = True
                    for row in cells:
                        row[index] = shorten(row[index], room)
    last = len(columns) - 1
    lines = []
    for row in [[column.header for column in columns], *cells]:
        parts = [
            value.rjust(widths[index])
            if columns[index].right
            else value.ljust(widths[index])
            if index < last
            else value
            for index, value in enumerate(row)
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines), cut
