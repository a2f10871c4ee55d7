"""Scaling of a plan over node counts: tokens/s against devices with the ideal (linear) line, and scaling
efficiency against devices with the ideal 100 %. Takes `search.scaling.scaling_table`'s DataFrame.
Configurations that do not fit in memory are drawn hollow; invalid node counts are left out."""
from __future__ import annotations

from simkit.report import figures

MODEL_COLOR, IDEAL_COLOR = "#1f77b4", "#7f7f7f"


def scaling_figure(table, *, title: str = "", mark_devices: float | None = None):
    """Two panels over the number of devices (log 2 axis): throughput and scaling efficiency.
    `mark_devices` circles the plan's own size."""
    valid = table[table["reason"] == ""].sort_values("devices")
    if valid.empty:
        raise ValueError("no valid node count to plot")
    devices = valid["devices"].to_numpy(float)
    fits = valid["fits_in_memory"].fillna(False).to_numpy(bool)
    fig, (tput, eff) = figures.new_figure(11, 4.4, cols=2)

    tput.plot(devices, valid["ideal_tokens_per_s"], ls="--", color=IDEAL_COLOR, label="ideal (linear)")
    tput.plot(devices, valid["tokens_per_s"], "-", color=MODEL_COLOR, label="predicted")
    _points(tput, devices, valid["tokens_per_s"].to_numpy(float), fits)
    tput.set(xscale="log", yscale="log", xlabel="devices", ylabel="throughput (tokens/s)",
             title="throughput")
    figures.plain_log_axis(tput.yaxis)

    eff.axhline(100, ls="--", color=IDEAL_COLOR, label="ideal (100 %)")
    efficiency = 100 * valid["scaling_efficiency"].to_numpy(float)
    eff.plot(devices, efficiency, "-", color=MODEL_COLOR, label="predicted")
    _points(eff, devices, efficiency, fits)
    for x, y in zip(devices, efficiency):
        eff.annotate(f"{y:.1f}", (x, y), xytext=(0, 6), textcoords="offset points", ha="center", fontsize=7)
    low = min(efficiency.min(), 100)
    eff.set(xscale="log", xlabel="devices", ylabel="scaling efficiency (%)", title="scaling efficiency",
            ylim=(max(0, low - 0.15 * (105 - low) - 2), 105))

    for ax in (tput, eff):
        ax.set_xticks(devices, [f"{d:g}" for d in devices])
        ax.set_xticks([], minor=True)
        ax.grid(True, which="major", alpha=0.3)
        if mark_devices is not None and mark_devices in devices:
            i = list(devices).index(mark_devices)
            y = (valid["tokens_per_s"].to_numpy(float) if ax is tput else efficiency)[i]
            ax.plot([mark_devices], [y], "o", ms=13, mfc="none", mec="black", mew=1.2, label="the plan")
        ax.legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


def _points(ax, x, y, fits) -> None:
    """Filled markers for configurations that fit in memory, hollow ones (labelled) for those that don't."""
    ax.plot(x[fits], y[fits], "o", color=MODEL_COLOR, ms=5, ls="none")
    if (~fits).any():
        ax.plot(x[~fits], y[~fits], "o", mfc="white", mec="#d62728", ms=6, ls="none", label="does not fit in memory")
