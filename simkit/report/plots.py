"""Plots for reports: `predicted_vs_measured_plot(...)` draws a log-log scatter with a 1:1 line and error
bands. matplotlib is imported inside the functions (headless Agg backend)."""
from __future__ import annotations

from typing import Sequence

from simkit.core.files import save_figure


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
    save_figure(fig, path, dpi=120)  # whole or absent
    plt.close(fig)


def _short(text: str, n: int) -> str:
    """Cut from the middle: labels often differ only at the end (e.g. the hardware in parentheses)."""
    if len(text) <= n:
        return text
    head = (n - 1) // 2
    return text[:head] + "…" + text[len(text) - (n - 1 - head):]
