"""Time of one operation on one device: GEMMs through the device's matmul efficiency (catalogue)
or its measured throughput table (calibrated profile); memory-bound ops from bytes / achieved
bandwidth (roofline: Williams et al. 2009, "Roofline: an insightful visual performance model")."""
from __future__ import annotations

import functools

import numpy as np

from simkit.hardware import Device
from simkit.model import attention
from simkit.model.params import value as fitted

# Achieved fraction of peak HBM bandwidth for streaming kernels when a device file gives none.
# Assumption informed by STREAM/BabelStream-type results on datacenter GPUs (typically 85-92% of
# the datasheet figure); `simkit calibrate` replaces it with a measurement.
DEFAULT_BANDWIDTH_EFFICIENCY = 0.85

# A GEMM's depth: a tensor-core GEMM kernel (CUTLASS / cuBLAS) computes each output tile in a main loop
# over the inner dimension k, in blocks of 64, behind a software pipeline that must fill before the first
# block and drain and store the tile after the last. That fixed work costs about as much as three more
# k-blocks at 16-bit tensor-core speed (assumption from the kernel structure: a 3-stage pipeline of
# 64-wide k-blocks), so the achieved rate scales with k / (k + 192), relative to a deep GEMM (k = 8192,
# where MAMF-style searches find their best shapes: hardware-facts.md 9.1, best k 3072-13312). The fixed
# work takes the same time at any rate, so in k-blocks it grows with the dtype's peak: 96 for tf32, 384
# for fp8, a few (negligible) on CUDA cores.
GEMM_FIXED_K_16BIT = 192.0
GEMM_REFERENCE_K = 8192.0

# Catalogue matmul efficiencies are MAMF figures: the best shape of a search, one GEMM repeated at
# full clocks. A training step sustains less (power-limited clocks, concurrent NCCL kernels). The best
# published end-to-end result on A100 is 72% MFU (FlashAttention-2, Dao 2023, abstract: "225 TFLOPs/s per
# A100 GPU (72% model FLOPs utilization)", GPT-3 1.3B/2.7B) against an A100 MAMF of 86.9%
# (stas00/ml-engineering): their ratio, 0.83, divided by what the depth model above gives that run's GEMM
# mix (0.983 for GPT-3 2.7B: d_model 2560, d_ff 10240), 0.843, is applied to every catalogue device.
# Calibrated profiles are measured, not derated.
SUSTAINED_MATMUL_FRACTION = 0.72 / 0.869 / 0.983

# Fused attention: the kernel's share of peak by GPU generation, see simkit/model/attention.py.

# Host-side cost of launching one eager PyTorch op. Overlaps with GPU work (asynchronous launch) but
# adds to every op on a CPU device. Assumption: a few microseconds per op in eager mode.
DISPATCH_S = 5e-6


def _log_points(points) -> np.ndarray:
    return np.log2(np.array([[p.m, p.n, p.k] for p in points], dtype=float))


@functools.lru_cache(maxsize=32)
def _table(device: Device, dtype: str):
    cal = device.calibration
    if cal is None or not cal.matmul:
        return None
    points = cal.matmul.get(dtype)
    if not points:
        fallback = {"tf32": "fp32", "fp8": "bf16"}.get(dtype)
        points = cal.matmul.get(fallback) if fallback else None
    if not points:
        return None
    rates = np.array([p.flop_per_s for p in points], dtype=float)
    return _log_points(points), rates


def depth_factor(device: Device, dtype: str, k):
    """The share of a deep GEMM's rate a GEMM of inner dimension k reaches (see GEMM_FIXED_K_16BIT)."""
    half = device.peak("bf16") or device.peak("fp16")
    peak = device.peak(dtype) or device.peak("fp32")
    if not half or not peak:
        return 1.0
    k0 = GEMM_FIXED_K_16BIT * peak / half
    k = np.asarray(k, dtype=float)
    return (k / (k + k0)) / (GEMM_REFERENCE_K / (GEMM_REFERENCE_K + k0))


def matmul_rate(device: Device, dtype: str, m, n, k) -> np.ndarray:
    """Achieved FLOP/s for an (m x k) @ (k x n) GEMM.

    Calibrated: inverse-distance weighting of the measured throughputs in log2(m, n, k) space over
    the 4 nearest measured shapes (shapes beyond the table take the nearest measured rates).
    Catalogue: dense peak x the device's matmul efficiency for that dtype.
    """
    table = _table(device, dtype)
    scale = fitted(device, "gemm")
    if table is None:
        peak = device.peak(dtype) or device.peak("fp32")
        rate = peak * device.efficiency(dtype) * SUSTAINED_MATMUL_FRACTION * scale
        return rate * depth_factor(device, dtype, k) + 0.0 * np.asarray(m * n, dtype=float)
    pts, rates = table
    q = np.log2(np.stack(np.broadcast_arrays(*(np.asarray(x, dtype=float) for x in (m, n, k))), axis=-1))
    q = np.maximum(q, 0.0)
    dist = np.sqrt(((q[..., None, :] - pts) ** 2).sum(-1))          # (..., n_points)
    nearest = min(4, len(rates))
    idx = np.argsort(dist, axis=-1)[..., :nearest]
    d = np.take_along_axis(dist, idx, -1)
    wts = 1.0 / np.maximum(d, 1e-3) ** 2
    return scale * (wts * rates[idx]).sum(-1) / wts.sum(-1)


def bandwidth(device: Device, nbytes, pattern: str = "triad") -> np.ndarray:
    """Achieved bytes/s for a kernel of the given calibrated pattern moving `nbytes` (working set).

    Calibrated profiles time cross-entropy, GELU and LayerNorm kernels themselves (on a CPU their
    arithmetic makes them several times slower than a plain stream); other patterns, and profiles
    without that measurement, use the triad. Catalogue devices use datasheet bandwidth x efficiency.
    """
    cal = device.calibration
    table = None
    if cal is not None:
        tables = cal.memory_bandwidth
        # a profile calibrated before a kernel pattern existed: its nearest relative, else the triad
        related = {"cross_entropy_fused": "cross_entropy"}.get(pattern)
        table = tables.get(pattern) or (related and tables.get(related)) or tables.get("triad") or tables.get("copy")
    scale = fitted(device, "memory")
    if table:
        sizes = np.log2([row[0] for row in table])
        rates = np.array([row[1] for row in table])
        return scale * np.interp(np.log2(np.maximum(np.asarray(nbytes, dtype=float), 1.0)), sizes, rates)
    eff = device.memory_bandwidth_efficiency or DEFAULT_BANDWIDTH_EFFICIENCY
    return np.broadcast_to(device.memory_bandwidth_bytes_per_s * eff * scale, np.shape(nbytes)).astype(float)


def first_touch_time(device: Device, nbytes):
    """Page-fault cost of writing `nbytes` of freshly mapped memory on a host device.

    PyTorch's CPU allocator hands large blocks back to the OS (glibc malloc/free), so every step
    maps and zero-fills its activation memory again. Measured by `simkit calibrate` as the
    `first_touch` bandwidth pattern; devices without that measurement pay nothing here.
    """
    cal = device.calibration
    table = cal.memory_bandwidth.get("first_touch") if (cal is not None and is_host_device(device)) else None
    if not table:
        return 0.0 * np.asarray(nbytes, dtype=float)
    sizes = np.log2([row[0] for row in table])
    rates = np.array([row[1] for row in table])
    return nbytes / np.interp(np.log2(np.maximum(np.asarray(nbytes, dtype=float), 1.0)), sizes, rates)


def gemm_time(device: Device, dtype: str, m, n, k, batch, elem_bytes: int):
    """Roofline time of a (batched) GEMM: max(compute at the achieved rate, bytes at bandwidth)."""
    flops = 2.0 * m * n * k * batch
    moved = (m * k + k * n + m * n) * batch * elem_bytes
    t_compute = flops / matmul_rate(device, dtype, m, n, k)
    t_memory = moved / bandwidth(device, moved)
    return np.maximum(t_compute, t_memory)


def memory_time(device: Device, nbytes, pattern: str = "triad"):
    return nbytes / bandwidth(device, nbytes, pattern)


def _attention_table(rows: list[dict], key: str, seq_len, head_dim) -> np.ndarray:
    """Measured attention rate at (seq_len, head_dim): the measured head_dim nearest (in log2), and
    between its measured sequence lengths linear in log2(seq_len), the end values beyond them."""
    s, d = np.broadcast_arrays(np.log2(np.asarray(seq_len, float)), np.log2(np.asarray(head_dim, float)))
    dims = sorted({r["head_dim"] for r in rows})
    per_dim = []
    for dim in dims:
        group = sorted((r["seq_len"], r[key]) for r in rows if r["head_dim"] == dim)
        per_dim.append(np.interp(s, np.log2([g[0] for g in group]), [g[1] for g in group]))
    nearest = np.argmin(np.abs(d[..., None] - np.log2(dims)), axis=-1)
    return np.take_along_axis(np.stack(per_dim, -1), nearest[..., None], -1)[..., 0]


def attention_rates(device: Device, dtype: str, seq_len, head_dim, kernel: str = "default"):
    """(forward, backward) FLOP/s of fused attention: measured (calibrated profile) or the kernel's share of
    the 16-bit peak on the device's generation (simkit.model.attention)."""
    scale = fitted(device, "attention")
    cal = device.calibration
    if cal is not None and cal.attention:
        rows = [r for r in cal.attention if r.get("dtype") == dtype] or list(cal.attention)
        return (scale * _attention_table(rows, "forward_flop_per_s_median", seq_len, head_dim),
                scale * _attention_table(rows, "backward_flop_per_s_median", seq_len, head_dim))
    peak = device.peak(dtype) or device.peak("fp32")
    if device.calibration is not None:   # calibrated without an attention table: use the GEMM rate
        rate = matmul_rate(device, dtype, seq_len, seq_len, head_dim) / fitted(device, "gemm") * scale
        return rate, rate
    fwd, bwd = attention.efficiency(device.architecture, kernel, seq_len)
    return peak * fwd * scale, peak * bwd * scale


def is_host_device(device: Device) -> bool:
    """A CPU runs ops synchronously, so per-op dispatch cost adds up instead of hiding."""
    if device.name == "cpu":
        return True
    cal = device.calibration
    return cal is not None and str((cal.raw.get("settings") or {}).get("device", "")).lower() == "cpu"


def host_shares(device: Device, workers) -> tuple:
    """(compute, bandwidth) fraction of a calibrated host that each of `workers` processes gets.

    Data-parallel workers on one CPU split its cores (threads per worker = cores // workers, as
    `simkit validate` and torchrun set them) and its memory bandwidth. When calibrate measured a GEMM
    on every worker at once (`--comm --nproc N`, collectives.concurrent_matmul) and N equals the
    plan's workers, compute gets that measured rate relative to the single-process rate of the same
    shape; otherwise compute is assumed to scale linearly with threads. GPUs are not shared.
    """
    if not is_host_device(device) or device.calibration is None:
        return 1.0, 1.0
    cal = device.calibration
    env = cal.environment
    threads = float(env.get("threads") or 1)
    cores = float(env.get("cpu_count") or threads)
    w = np.maximum(np.asarray(workers, dtype=float), 1.0)
    compute = np.minimum(1.0, np.maximum(1.0, np.floor(cores / w)) / threads)
    measured = cal.concurrent_matmul
    if measured and measured["nproc"] > 1 and cal.matmul:
        alone = matmul_rate(device, "fp32", measured["m"], measured["n"], measured["k"])
        share = min(1.0, measured["flop_per_s"] / float(alone))
        compute = np.where(w == measured["nproc"], share, compute)
    return compute, 1.0 / w
