"""Text tables for reports (the CLI prints them; nothing here prints).

Generic helpers: `table(rows, columns)` lays out a list of dicts, `grid(headers, cells, right)` a list of
rows already formatted, `seconds` / `percent` format cells. `terminal.render_table` draws the same tables
with rich on an interactive terminal.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Collection, Sequence

Column = tuple[str, str, Callable[[Any], str]]   # (key, header, cell formatter)


def seconds(x: float | None) -> str:
    """3 significant digits in s, ms or us; '-' for missing."""
    if x is None or not math.isfinite(x):
        return "-"
    if abs(x) >= 100:
        return f"{x:.0f} s"
    if abs(x) >= 1:
        return f"{x:.3g} s"
    if abs(x) >= 1e-3:
        return f"{x * 1e3:.3g} ms"
    if x == 0:
        return "0"
    return f"{x * 1e6:.3g} us"


def percent(x: float | None, signed: bool = True) -> str:
    """A fraction as a percentage (0.123 -> '+12.3%'); '-' for missing."""
    if x is None or not math.isfinite(x):
        return "-"
    return f"{100 * x:+.1f}%" if signed else f"{100 * x:.1f}%"


def plain(x: Any) -> str:
    return "-" if x is None else str(x)


def table(rows: Sequence[dict], columns: Sequence[Column], indent: str = "") -> str:
    """Aligned text table: text columns left-aligned, everything else right-aligned."""
    return grid(*cells(rows, columns), indent=indent)


def cells(rows: Sequence[dict], columns: Sequence[Column]) -> tuple[list[str], list[list[str]], set[int]]:
    """(headers, formatted cells, right-aligned column indexes): columns holding only text (or nothing)
    are left-aligned, the others (numbers) right-aligned."""
    body = [[fmt(row.get(key)) for key, _, fmt in columns] for row in rows]
    right = {i for i, (key, _, _) in enumerate(columns)
             if not all(isinstance(row.get(key), str) or row.get(key) is None for row in rows)}
    return [header for _, header, _ in columns], body, right


def grid(headers: Sequence[str], body: Sequence[Sequence[str]], right: Collection[int] = (), indent: str = "") -> str:
    """Plain aligned text: a header line, a rule of dashes, one line per row; columns two spaces apart,
    padded to their widest cell; columns in `right` right-aligned."""
    widths = [max([len(str(h))] + [len(str(r[i])) for r in body]) for i, h in enumerate(headers)]

    def line(values):
        parts = [str(v).rjust(w) if i in right else str(v).ljust(w) for i, (v, w) in enumerate(zip(values, widths))]
        return (indent + "  ".join(parts)).rstrip()

    rule = indent + "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule] + [line(r) for r in body])
