"""Text tables for reports (the CLI prints them; nothing here prints).

Generic helpers: `table(rows, columns)` lays out a list of dicts, `seconds` / `percent` format cells.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

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
    cells = [[fmt(row.get(key)) for key, _, fmt in columns] for row in rows]
    headers = [header for _, header, _ in columns]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    left = [all(isinstance(row.get(key), str) or row.get(key) is None for row in rows) for key, _, _ in columns]

    def line(values):
        parts = [v.ljust(w) if lf else v.rjust(w) for v, w, lf in zip(values, widths, left)]
        return (indent + "  ".join(parts)).rstrip()

    rule = indent + "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule] + [line(r) for r in cells])
