"""Where the step time and the device memory go, as stacked horizontal bars: one bar per labelled
configuration (one plan, a sweep's rows, or the top configurations of a search).

`breakdown_figure([(label, breakdown_s), ...])` takes the `breakdown_s` of a Prediction or the breakdown
columns of a sweep row; `memory_figure([(label, memory_breakdown_bytes), ...], capacity_bytes)` the memory
of Predictions. Both return a matplotlib Figure; the bars' containers carry the part names as labels."""
from __future__ import annotations

from typing import Mapping, Sequence

from simkit.report import figures

# Breakdown keys that are not a slice of the step: the total communication includes what overlaps compute.
NOT_IN_STEP = ("communication_total",)
Labelled = Sequence[tuple[str, Mapping[str, float]]]


def step_parts() -> tuple[str, ...]:
    """The parts that add up to the step time, in the model's order."""
    from simkit.model.step import BREAKDOWN_KEYS

    return tuple(k for k in BREAKDOWN_KEYS if k not in NOT_IN_STEP)


def breakdown_figure(items: Labelled, *, title: str = ""):
    """Stacked bars of the step parts, one bar per (label, breakdown in seconds); the first item on top.
    Parts that are zero in every item are left out of the bars and the legend."""
    if not items:
        raise ValueError("breakdown_figure needs at least one labelled breakdown")
    seconds = [{p: float(b.get(p) or 0.0) for p in step_parts()} for _, b in items]
    parts = [p for p in step_parts() if any(s[p] > 0 for s in seconds)]
    totals = [sum(s[p] for p in parts) for s in seconds]
    scale, unit = figures.time_unit(max(totals))
    values = [[s[p] * scale for p in parts] for s in seconds]
    fig, (ax,) = figures.new_figure(9, 2.0 + 0.42 * len(items))
    _stack(ax, [label for label, _ in items], parts, values, figures.PART_COLORS)
    for y, total in enumerate(totals):
        ax.annotate(f"{total * scale:.3g} {unit}", (total * scale, y), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=8)
    if len(items) == 1:
        _shares(ax, values[0])
    ax.set(xlabel=f"time per optimizer step ({unit})", title=title or "step time breakdown",
           xlim=(0, max(totals) * scale * 1.12))
    fig.legend(loc="outside lower center", ncols=min(len(parts), 4), fontsize=8, frameon=False)
    return fig


def memory_figure(items: Labelled, capacity_bytes: float, *, title: str = ""):
    """Stacked bars of memory per device by kind (GiB), one bar per (label, memory breakdown in bytes),
    with the device's capacity as a vertical line; bars over the capacity say so."""
    if not items:
        raise ValueError("memory_figure needs at least one labelled memory breakdown")
    kinds = list(dict.fromkeys(k for _, m in items for k in m))
    gib = 2.0**30
    values = [[float(m.get(k) or 0.0) / gib for k in kinds] for _, m in items]
    totals = [sum(v) for v in values]
    cap = capacity_bytes / gib
    fig, (ax,) = figures.new_figure(9, 2.0 + 0.42 * len(items))
    _stack(ax, [label for label, _ in items], kinds, values, figures.MEMORY_COLORS)
    ax.axvline(cap, color="black", ls="--", lw=1.2, label=f"capacity {cap:.3g} GiB")
    for y, total in enumerate(totals):
        over = total > cap
        ax.annotate(f"{total:.3g} GiB" + (" - does not fit" if over else ""), (total, y), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=8, color="#d62728" if over else "black",
                    bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.8})
    ax.set(xlabel="memory per device (GiB)", title=title or "memory per device",
           xlim=(0, max(max(totals), cap) * 1.25))
    fig.legend(loc="outside lower center", ncols=min(len(kinds) + 1, 6), fontsize=8, frameon=False)
    return fig


def _stack(ax, labels: list[str], keys: list[str], values: list[list[float]], palette: dict[str, str]) -> None:
    """One horizontal bar per label, segments in `keys` order; first label on top."""
    seen: list[str] = []
    left = [0.0] * len(labels)
    ys = list(range(len(labels)))
    for i, key in enumerate(keys):
        widths = [row[i] for row in values]
        ax.barh(ys, widths, left=left, height=0.62, label=figures.label_of(key),
                color=figures.color_for(key, palette, seen), edgecolor="white", linewidth=0.5)
        left = [a + b for a, b in zip(left, widths)]
    ax.set_yticks(ys, [figures.short(label, 48) for label in labels], fontsize=8)
    ax.invert_yaxis()
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_axisbelow(True)


def _shares(ax, values: list[float]) -> None:
    """Each segment's share of the bar written inside it, where it is wide enough (one-bar figures)."""
    total, start = sum(values), 0.0
    for value in values:
        if total and value / total >= 0.06:
            ax.text(start + value / 2, 0, f"{100 * value / total:.0f}%", ha="center", va="center", fontsize=8)
        start += value


# Short names for the keys a sweep usually varies, so that bar labels stay readable.
SHORT_KEYS = {"training.micro_batch_size": "mb", "training.grad_accum_steps": "ga", "training.global_batch_size": "gbs",
              "parallelism.data_parallel": "dp", "parallelism.tensor_parallel": "tp",
              "parallelism.pipeline_parallel": "pp", "parallelism.virtual_pipeline_stages": "vpp",
              "parallelism.context_parallel": "cp", "parallelism.zero_stage": "zero",
              "training.activation_checkpointing": "ckpt", "hardware.nodes": "nodes"}


def sweep_items(frame, keys: Sequence[str], *, top: int | None = None) -> list[tuple[str, dict[str, float]]]:
    """Labelled breakdowns of a sweep's valid rows (`search.sweep.run_sweep`), fastest step first; at most
    `top` of them. Labels name the varied `keys`, e.g. 'mb=2, tp=4'."""
    valid = frame[frame["reason"] == ""].sort_values("step_time_s", kind="stable")
    if top is not None:
        valid = valid.head(top)
    parts = [k for k in step_parts() if k in valid.columns]
    items = []
    for _, row in valid.iterrows():
        label = ", ".join(f"{SHORT_KEYS.get(k, k.split('.')[-1])}={_value(row[k])}" for k in keys)
        items.append((label, {k: float(row[k]) for k in parts}))
    return items


def key_legend(keys: Sequence[str]) -> str:
    """'mb = micro_batch_size, tp = tensor_parallel' for the abbreviations used."""
    return ", ".join(f"{SHORT_KEYS[k]} = {k.split('.')[-1]}" for k in keys if k in SHORT_KEYS)


def _value(value) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)
