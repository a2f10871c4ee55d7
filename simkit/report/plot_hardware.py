"""What `simkit calibrate` measured, against the peaks it is usually compared with: the calibrated
profile's "roofline". Three panels:
- matmul: achieved FLOP/s against GEMM size (2*m*n*k FLOP per call) per dtype, the profile's peak (the best
  measured rate) and, given a reference device, its datasheet peak; extrapolated shapes drawn hollow;
- memory: achieved bandwidth against working set per access pattern, with the profile's and the reference's
  memory bandwidth;
- collectives: bus bandwidth against message size, measured points and the latency/bandwidth fit, per
  collective (within a node, and across nodes where measured).
Returns a matplotlib Figure; nothing here prints."""
from __future__ import annotations

import numpy as np

from simkit.hardware.types import DTYPES, Calibration, CollectiveFit, Device
from simkit.report import figures

DTYPE_COLORS = {"fp32": "#1f77b4", "tf32": "#17becf", "fp16": "#ff7f0e", "bf16": "#2ca02c", "fp8": "#d62728"}
COLLECTIVE_COLORS = {"all_reduce": "#1f77b4", "reduce_scatter": "#ff7f0e", "all_gather": "#2ca02c"}

# nccl-tests bus bandwidth = algorithm bandwidth x factor, with n ranks: all-reduce 2(n-1)/n, reduce-scatter
# and all-gather (n-1)/n (https://github.com/NVIDIA/nccl-tests/blob/master/doc/PERFORMANCE.md).
BUS_FACTOR = {"all_reduce": 2.0, "reduce_scatter": 1.0, "all_gather": 1.0}


def bus_bandwidth(kind: str, nproc: int, nbytes, seconds):
    """Bus bandwidth (bytes/s) of a collective moving `nbytes` (the full buffer) in `seconds` on `nproc` ranks."""
    n = max(nproc, 2)
    return BUS_FACTOR[kind] * (n - 1) / n * np.asarray(nbytes, float) / np.asarray(seconds, float)


def hardware_figure(device: Device, reference: Device | None = None, *, title: str = ""):
    """The three panels for a calibrated `device`; `reference` (a catalogue device) adds its datasheet peaks."""
    cal = device.calibration
    if cal is None:
        raise ValueError(f"{device.name} is not a calibrated profile (no calibration section)")
    fig, (mm, bw, coll) = figures.new_figure(15, 4.6, cols=3)
    _matmul(mm, device, cal, reference)
    _bandwidth(bw, device, cal, reference)
    _collectives(coll, cal)
    fig.suptitle(title or f"{device.name}: {device.description} (calibrated {cal.date or 'at an unknown date'})",
                 fontsize=11)
    return fig


def _extrapolated(cal: Calibration, dtype: str, count: int) -> list[bool]:
    """Which GEMM points were extrapolated rather than timed (kept in the profile's raw section)."""
    raw = (cal.raw.get("matmul") or {}).get(dtype) or []
    if len(raw) != count:
        return [False] * count
    return [bool(isinstance(p, dict) and p.get("extrapolated")) for p in raw]


def _matmul(ax, device: Device, cal: Calibration, reference: Device | None) -> None:
    dtypes = [d for d in DTYPES if cal.matmul.get(d)]
    best = max([p.flop_per_s for d in dtypes for p in cal.matmul[d]] + [device.peak(d) or 0 for d in dtypes])
    scale, unit = (1e12, "TFLOP/s") if best >= 1e12 else (1e9, "GFLOP/s")
    for dtype in dtypes:
        points = cal.matmul[dtype]
        flop = np.array([2.0 * p.m * p.n * p.k for p in points])
        rate = np.array([p.flop_per_s for p in points]) / scale
        hollow = np.array(_extrapolated(cal, dtype, len(points)))
        color = DTYPE_COLORS[dtype]
        ax.plot(flop[~hollow], rate[~hollow], "o", color=color, ms=4, ls="none", label=f"{dtype} measured")
        if hollow.any():
            ax.plot(flop[hollow], rate[hollow], "o", mfc="white", mec=color, ms=5, ls="none",
                    label=f"{dtype} extrapolated")
        if device.peak(dtype):
            ax.axhline(device.peak(dtype) / scale, color=color, ls=":", lw=1)
        if reference is not None and reference.peak(dtype):
            ax.axhline(reference.peak(dtype) / scale, color=color, ls="--", lw=1.2,
                       label=f"{dtype} peak, {reference.name} datasheet")
    ax.set(xscale="log", yscale="log", xlabel="GEMM size (FLOP per call, 2·m·n·k)",
           ylabel=f"achieved throughput ({unit})", title="matmul (dotted: the profile's peak)")
    figures.plain_log_axis(ax.yaxis)
    _finish(ax)


def _bandwidth(ax, device: Device, cal: Calibration, reference: Device | None) -> None:
    seen: list[str] = []
    for pattern, points in cal.memory_bandwidth.items():
        if not points:
            continue
        sizes = np.array([p[0] for p in points])
        rates = np.array([p[1] for p in points]) / 1e9
        ax.plot(sizes, rates, "o-", ms=4, lw=1, label=figures.label_of(pattern),
                color=figures.color_for(pattern, {"copy": "#1f77b4", "triad": "#ff7f0e"}, seen))
    ax.axhline(device.memory_bandwidth_bytes_per_s / 1e9, color="black", ls=":", lw=1,
               label=f"profile {figures.number(device.memory_bandwidth_bytes_per_s / 1e9)} GB/s")
    if reference is not None:
        ax.axhline(reference.memory_bandwidth_bytes_per_s / 1e9, color="black", ls="--", lw=1.2,
                   label=f"{reference.name} datasheet {figures.number(reference.memory_bandwidth_bytes_per_s / 1e9)} GB/s")
    ax.set(xscale="log", yscale="log", xlabel="working set (bytes)", ylabel="achieved bandwidth (GB/s)",
           title="memory bandwidth")
    figures.bytes_axis(ax.xaxis)
    figures.plain_log_axis(ax.yaxis)
    _finish(ax)


def _collectives(ax, cal: Calibration) -> None:
    sections = [("", cal.collectives), (" across nodes", cal.collectives_inter)]
    drawn = False
    for where, fits in sections:
        for kind, fit in fits.items():
            drawn |= _collective(ax, kind, fit, where)
    if not drawn:
        ax.text(0.5, 0.5, "no collectives in this profile\n(measure them with simkit calibrate --comm)",
                ha="center", va="center", transform=ax.transAxes, fontsize=9, color="#555555")
        ax.set(xticks=[], yticks=[], title="collectives")
        return
    ax.set(xscale="log", yscale="log", xlabel="message size (bytes)", ylabel="bus bandwidth (GB/s)",
           title="collectives (lines: latency/bandwidth fit)")
    figures.bytes_axis(ax.xaxis)
    figures.plain_log_axis(ax.yaxis)
    _finish(ax)


def _collective(ax, kind: str, fit: CollectiveFit, where: str) -> bool:
    """Measured points and the fitted curve of one collective; False when there is nothing to draw."""
    color = COLLECTIVE_COLORS.get(kind, "#7f7f7f")
    style = "--" if where else "-"
    ranks = f"{fit.nproc} ranks" + (f" on {fit.nnodes} nodes" if fit.nnodes > 1 else "")
    label = f"{figures.label_of(kind)}{where} ({ranks}, {fit.backend})" if fit.backend else \
        f"{figures.label_of(kind)}{where} ({ranks})"
    if fit.points:
        sizes = np.array([p[0] for p in fit.points])
        times = np.array([p[1] for p in fit.points])
        ax.plot(sizes, bus_bandwidth(kind, fit.nproc, sizes, times) / 1e9, "o" if not where else "s", color=color,
                ms=4, ls="none", label=label)
        grid = np.geomspace(sizes.min(), sizes.max(), 64)
    else:
        grid = np.geomspace(2**10, 2**28, 64)
    if fit.bus_bandwidth_bytes_per_s <= 0:
        return bool(fit.points)
    n = max(fit.nproc, 2)
    fitted_s = fit.latency_s + BUS_FACTOR[kind] * (n - 1) / n * grid / fit.bus_bandwidth_bytes_per_s
    ax.plot(grid, bus_bandwidth(kind, fit.nproc, grid, fitted_s) / 1e9, style, color=color, lw=1,
            label=None if fit.points else label)
    return True


def _finish(ax) -> None:
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
