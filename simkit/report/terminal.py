"""Tables for the terminal: drawn with rich when stdout is an interactive terminal and NO_COLOR is unset,
the plain aligned text of `tables.grid` otherwise (pipes, files, CI logs, tests, NO_COLOR). Both render to
a string; the CLI prints it. `--json` output never goes through here."""
from __future__ import annotations

import io
import os
import shutil
import sys
from typing import Collection, Sequence, TextIO

from simkit.report import tables


def fancy_terminal(stream: TextIO | None = None) -> bool:
    """True when `stream` (default stdout) is an interactive terminal that may get colour and box lines:
    not when piped or redirected, not with NO_COLOR set to anything (https://no-color.org), not on TERM=dumb."""
    stream = sys.stdout if stream is None else stream
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:   # a closed stream
        return False


def render_table(rows: Sequence[dict], columns: Sequence[tables.Column], *, indent: str = "",
                 fancy: bool | None = None) -> str:
    """`tables.table(rows, columns)`, drawn with rich on an interactive terminal (`fancy=None` asks
    `fancy_terminal()`); the plain text is exactly `tables.table`'s."""
    headers, body, right = tables.cells(rows, columns)
    return render_grid(headers, body, right, indent=indent, fancy=fancy)


def render_grid(headers: Sequence[str], body: Sequence[Sequence[str]], right: Collection[int] = (), *,
                indent: str = "", fancy: bool | None = None) -> str:
    """Rows of formatted cells under `headers`; columns in `right` right-aligned (numbers)."""
    if fancy is None:
        fancy = fancy_terminal()
    if not fancy:
        return tables.grid(headers, body, right, indent=indent)
    return _rich_grid(headers, body, right, indent)


def _rich_grid(headers, body, right, indent: str) -> str:
    from rich import box
    from rich.console import Console
    from rich.padding import Padding
    from rich.table import Table
    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold", padding=(0, 1))
    for i, header in enumerate(headers):
        table.add_column(Text(str(header)), justify="right" if i in right else "left", overflow="fold")
    for row in body:     # Text, not str: cells such as "regression [1]" are not rich markup
        table.add_row(*(Text(str(cell)) for cell in row))
    width = shutil.get_terminal_size(fallback=(120, 24)).columns
    console = Console(file=io.StringIO(), force_terminal=True, width=width, highlight=False, soft_wrap=False)
    console.print(Padding(table, (0, 0, 0, len(indent))) if indent else table)
    return "\n".join(line.rstrip() for line in console.file.getvalue().rstrip("\n").splitlines())


def render_frame(frame, *, max_rows: int = 60, fancy: bool | None = None) -> str:
    """A pandas DataFrame as `frame.to_string(index=False, max_rows=max_rows)`, or with rich on an
    interactive terminal (the first and last rows when longer than `max_rows`, as pandas does)."""
    if fancy is None:
        fancy = fancy_terminal()
    if not fancy:
        return frame.to_string(index=False, max_rows=max_rows)
    rows = list(frame.astype(object).itertuples(index=False))
    body = [[_cell(v) for v in row] for row in rows]
    if len(body) > max_rows:
        half = max_rows // 2
        body = body[:half] + [["..."] * len(frame.columns)] + body[-half:]
    right = {i for i, col in enumerate(frame.columns) if frame[col].dtype.kind in "biuf"}
    return _rich_grid([str(c) for c in frame.columns], body, right, "")


def _cell(value) -> str:
    """A DataFrame value for a table cell: 6 significant digits, '-' for NaN and None."""
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
