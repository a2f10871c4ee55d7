"""Predicted against measured step time: a log-log scatter by source with the 1:1 line and a +/-band
(default 10 %). Used by `validate --published/--suite --plot` and `simkit plot accuracy` (published cases
and `validate --record` files). `accuracy_points` reads both kinds of input into points.

`predicted_vs_measured_figure(points)` returns the Figure; `predicted_vs_measured_plot(points, path)` saves it."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from simkit.core.errors import SimkitError
from simkit.report import figures

MARKERS = ("o", "s", "^", "D", "v")


def predicted_vs_measured_figure(points: Sequence[dict], *, title: str = "", band: float = 0.10, unit: str = "s",
                                 label_key: str = "group"):
    """Log-log scatter of points {"measured", "predicted", label_key}: one series per group, labelled with
    its count and mean absolute percentage error, the 1:1 line and the +/-band."""
    groups: dict[str, list[dict]] = {}
    for p in points:
        groups.setdefault(str(p.get(label_key, "")), []).append(p)
    outside = len(groups) > 6        # a long legend goes under the plot instead of over the points
    fig, (ax,) = figures.new_figure(7.5, 6.5 + (0.17 * (len(groups) + 2) if outside else 0))
    for i, (name, pts) in enumerate(sorted(groups.items())):
        mape = sum(abs(p["predicted"] - p["measured"]) / p["measured"] for p in pts) / len(pts)
        ax.scatter([p["measured"] for p in pts], [p["predicted"] for p in pts], s=18, alpha=0.8,
                   color=f"C{i % 10}", marker=MARKERS[(i // 10) % len(MARKERS)],   # 10 colours, then new shapes
                   label=f"{figures.short(name, 64)} (n={len(pts)}, MAPE {100 * mape:.1f}%)")
    values = [v for p in points for v in (p["measured"], p["predicted"]) if v and v > 0]
    lo, hi = (min(values) / 1.5, max(values) * 1.5) if values else (0.1, 10.0)
    ax.plot([lo, hi], [lo, hi], color="black", lw=1, label="predicted = measured")
    for f in (1 + band, 1 - band):
        ax.plot([lo, hi], [lo * f, hi * f], color="grey", lw=0.8, ls="--")
    ax.fill_between([lo, hi], [lo * (1 - band), hi * (1 - band)], [lo * (1 + band), hi * (1 + band)],
                    color="grey", alpha=0.12, label=f"±{100 * band:.0f}%")
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), title=title,
           xlabel=f"measured step time ({unit})", ylabel=f"predicted step time ({unit})")
    from matplotlib.ticker import FuncFormatter, LogLocator

    for axis in (ax.xaxis, ax.yaxis):   # plain numbers; minor labels at 2 and 5 only, so they never overlap
        axis.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.grid(True, which="both", alpha=0.3)
    if outside:
        fig.legend(fontsize=7, loc="outside lower center", ncols=1, frameon=False)
    else:
        ax.legend(fontsize=7, loc="upper left")
    return fig


def predicted_vs_measured_plot(points: Sequence[dict], path: str, *, title: str = "", band: float = 0.10,
                               unit: str = "s", label_key: str = "group") -> None:
    """`predicted_vs_measured_figure` written to `path` (PNG or SVG by extension)."""
    figures.save_figure(predicted_vs_measured_figure(points, title=title, band=band, unit=unit,
                                                     label_key=label_key), path)


def published_points(score: dict) -> list[dict]:
    """Points of `validate.published.score_published(...)`, grouped by the source of each case."""
    return [{"measured": c["measured_step_time_s"], "predicted": c["predicted_step_time_s"], "group": c["source"]}
            for c in score["cases"]]


def record_points(path: str | Path) -> list[dict]:
    """Points of a `validate --record` file (one JSON object per line), grouped by the file and the device
    the runs were measured on; lines of failed runs (no step times) are skipped."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise SimkitError(f"cannot read the record file: {exc.strerror or exc}", file=str(path)) from None
    points = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            measured = float(record["measured"]["step_time_s"])
            predicted = float(record["predicted"]["step_time_s"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SimkitError(f"line {number} is not a `simkit validate --record` line ({exc})", file=str(path)) \
                from None
        device = (record.get("environment") or {}).get("device_name") or "?"
        points.append({"measured": measured, "predicted": predicted, "group": f"{path.name} ({device})",
                       "plan": record.get("plan_file")})
    return points

