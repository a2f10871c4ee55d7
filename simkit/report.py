"""Text tables and plots for reports (the CLI prints them; nothing here prints).

Generic helpers: `table(rows, columns)` lays out a list of dicts, `seconds` / `percent` format cells,
`predicted_vs_measured_plot(...)` draws a log-log scatter with a 1:1 line and error bands.
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


def predicted_vs_measured_plot(points: Sequence[dict], path: str, *, title: str = "", band: float = 0.10,
                               unit: str = "s", label_key: str = "group") -> None:
    """Log-log scatter of points {"measured", "predicted", label_key} with the 1:1 line and +/-band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 6))
    groups: dict[str, list[dict]] = {}
    for p in points:
        groups.setdefault(str(p.get(label_key, "")), []).append(p)
    for name, pts in sorted(groups.items()):
        ax.scatter([p["measured"] for p in pts], [p["predicted"] for p in pts], s=18, alpha=0.8,
                   label=_short(name, 60))
    values = [v for p in points for v in (p["measured"], p["predicted"]) if v and v > 0]
    lo, hi = (min(values) / 1.5, max(values) * 1.5) if values else (0.1, 10.0)
    ax.plot([lo, hi], [lo, hi], color="black", lw=1, label="predicted = measured")
    for f, style in ((1 + band, "--"), (1 - band, "--")):
        ax.plot([lo, hi], [lo * f, hi * f], color="grey", lw=0.8, ls=style)
    ax.fill_between([lo, hi], [lo * (1 - band), hi * (1 - band)], [lo * (1 + band), hi * (1 + band)],
                    color="grey", alpha=0.12, label=f"±{100 * band:.0f}%")
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), title=title,
           xlabel=f"measured ({unit})", ylabel=f"predicted ({unit})")
    from matplotlib.ticker import FuncFormatter, LogLocator

    for axis in (ax.xaxis, ax.yaxis):   # plain numbers; minor labels at 2 and 5 only, so they never overlap
        axis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _short(text: str, n: int) -> str:
    """Cut from the middle: labels often differ only at the end (e.g. the hardware in parentheses)."""
    if len(text) <= n:
        return text
    head = (n - 1) // 2
    return text[:head] + "…" + text[len(text) - (n - 1 - head):]
