"""Collective-communication benchmark: all-reduce, reduce-scatter and all-gather across N processes.

`run_workers` starts N ranks of `simkit.measure.comm_worker` with torchrun (gloo on CPU, NCCL on
CUDA); `simkit.measure.nodes` starts them across nodes. `summarize` turns their timings into
algorithm and bus bandwidth as nccl-tests defines them (nccl-tests doc/PERFORMANCE.md) and an
alpha-beta fit per collective, for the ranks of one node and, across nodes, for the whole world.
This module does not import torch.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from simkit.core.errors import SimkitError
from simkit.measure import launch
from simkit.measure.timing import median_iqr

OPS = ("all_reduce", "reduce_scatter", "all_gather")


def bus_factor(op: str, nproc: int) -> float:
    """busbw / algbw (nccl-tests doc/PERFORMANCE.md): all-reduce 2(n-1)/n; reduce-scatter and
    all-gather (n-1)/n."""
    if nproc < 2:
        raise ValueError("a collective needs at least 2 processes")
    ring = (nproc - 1) / nproc
    return 2 * ring if op == "all_reduce" else ring


def algbw(size_bytes: float, seconds: float) -> float:
    """Algorithm bandwidth: size / time, size being the full buffer (the all-reduce buffer, the
    reduce-scatter input, the all-gather output), as in nccl-tests."""
    return size_bytes / seconds


def busbw(op: str, nproc: int, size_bytes: float, seconds: float) -> float:
    """Bus bandwidth: algbw scaled so it compares with the link speed whatever n is."""
    return algbw(size_bytes, seconds) * bus_factor(op, nproc)


def fit_alpha_beta(op: str, nproc: int, sizes: list[float], seconds: list[float]) -> tuple[float, float]:
    """(latency_s, bus bandwidth bytes/s) from least squares on t = alpha + factor*size/busbw.

    Residuals are taken relative to each time (each row weighted by 1/t): plain least squares lets
    the largest message decide both numbers and usually gives a negative latency. The latency is
    clamped at 0 (then the bandwidth is refitted through the origin)."""
    x = np.asarray(sizes, dtype=float) * bus_factor(op, nproc)
    t = np.asarray(seconds, dtype=float)
    weights = 1.0 / t
    design = np.column_stack([np.ones_like(x), x]) * weights[:, None]
    (alpha, beta), *_ = np.linalg.lstsq(design, t * weights, rcond=None)
    if alpha < 0:
        alpha = 0.0
        beta = float(np.sum(x * weights**2 * t) / np.sum((x * weights) ** 2))
    if beta <= 0:  # times do not grow with size: bandwidth not resolved, use the best point seen
        return float(alpha), float(np.max(x / t))
    return float(alpha), float(1.0 / beta)


@dataclass(frozen=True, kw_only=True, slots=True)
class CollectivePoint:
    size_bytes: int
    seconds: tuple[float, ...]
    """Seconds per call, slowest rank, one value per sample."""
    time_s_median: float
    time_s_iqr: float
    algbw_bytes_per_s: float
    busbw_bytes_per_s: float
    busbw_samples: tuple[float, ...]


@dataclass(frozen=True, kw_only=True, slots=True)
class CollectiveResult:
    op: str
    algorithm: str
    points: tuple[CollectivePoint, ...]
    latency_s: float
    bus_bandwidth_bytes_per_s: float
    fit_max_relative_error: float
    """Largest |fitted - measured| / measured time over the points: how well alpha-beta describes them."""


@dataclass(frozen=True, kw_only=True, slots=True)
class InterNodeResult:
    """The collectives measured over the world group of ranks on several nodes."""

    nnodes: int
    nproc_per_node: int
    nproc: int
    """All ranks of the world group (nnodes * nproc_per_node)."""
    ops: dict[str, CollectiveResult]


@dataclass(frozen=True, kw_only=True, slots=True)
class CollectivesResult:
    backend: str
    nproc: int
    """Ranks of one node: the group `ops` were measured over."""
    threads_per_worker: int
    ops: dict[str, CollectiveResult]
    """Within one node (empty when a node runs one rank: there is no collective to measure)."""
    concurrent_matmul: dict | None = None
    """fp32 GEMM per worker while all `nproc` workers multiply at once, sampled before the collectives and
    after each (comm_worker.concurrent_matmul)."""
    inter_node: InterNodeResult | None = None
    """Across nodes (`calibrate --comm --nnodes M`), measured right after each size within the node."""
    launch: str = ""
    """How the ranks were started, for the profile's method notes (empty on one node)."""


def summarize(raw: dict, launch: str = "") -> CollectivesResult:
    """comm_worker's JSON -> per-point bandwidths and a fit per collective."""
    inter = raw.get("inter_node")
    inter_node = None if inter is None else InterNodeResult(
        nnodes=int(inter["nnodes"]), nproc_per_node=int(inter["nproc_per_node"]), nproc=int(inter["nproc"]),
        ops=_summarize_ops(inter["ops"], int(inter["nproc"])))
    return CollectivesResult(backend=raw["backend"], nproc=int(raw["nproc"]),
                             threads_per_worker=int(raw["threads_per_worker"]),
                             ops=_summarize_ops(raw["ops"], int(raw["nproc"])),
                             concurrent_matmul=raw.get("concurrent_matmul"), inter_node=inter_node, launch=launch)


def _summarize_ops(raw_ops: dict, n: int) -> dict[str, CollectiveResult]:
    """Each collective's points over `n` ranks -> bandwidths and an alpha-beta fit."""
    ops = {}
    for op, data in raw_ops.items():
        points = []
        for p in data["points"]:
            median, iqr = median_iqr(p["seconds"])
            points.append(CollectivePoint(
                size_bytes=int(p["bytes"]), seconds=tuple(p["seconds"]), time_s_median=median, time_s_iqr=iqr,
                algbw_bytes_per_s=algbw(p["bytes"], median), busbw_bytes_per_s=busbw(op, n, p["bytes"], median),
                busbw_samples=tuple(busbw(op, n, p["bytes"], s) for s in p["seconds"])))
        latency, bandwidth = fit_alpha_beta(op, n, [p.size_bytes for p in points], [p.time_s_median for p in points])
        error = max(abs(latency + bus_factor(op, n) * p.size_bytes / bandwidth - p.time_s_median) / p.time_s_median
                    for p in points)
        ops[op] = CollectiveResult(op=op, algorithm=data["algorithm"], points=tuple(points), latency_s=latency,
                                   bus_bandwidth_bytes_per_s=bandwidth, fit_max_relative_error=error)
    return ops


def worker_command(nproc: int, output: str, *, device: str, sizes: list[int], budget_s: float, threads: int,
                   min_samples: int, max_samples: int, emulate_reduce_scatter: bool = False,
                   launch: list[str] | None = None, timeout_s: float | None = None) -> list[str]:
    """The torchrun command line; `launch` replaces `--standalone --nproc_per_node N` (simkit.measure.nodes)."""
    launch = launch if launch is not None else ["--standalone", "--nproc_per_node", str(nproc)]
    command = [sys.executable, "-m", "torch.distributed.run", *launch,
               "-m", "simkit.measure.comm_worker", "--output", output, "--device", device,
               "--sizes", ",".join(map(str, sizes)), "--budget-s", f"{budget_s:.3f}", "--threads", str(threads),
               "--min-samples", str(min_samples), "--max-samples", str(max_samples)]
    command += ["--timeout-s", f"{timeout_s:g}"] if timeout_s is not None else []
    return command + (["--emulate-reduce-scatter"] if emulate_reduce_scatter else [])


def run_workers(nproc: int, *, device: str, sizes: list[int], budget_s: float, cores: int, min_samples: int = 5,
                max_samples: int = 30, emulate_reduce_scatter: bool = False, timeout_s: float | None = None,
                on_wait: Callable[[], None] = lambda: None) -> dict:
    """Run the collective benchmark on `nproc` local ranks and return rank 0's JSON report.

    Each rank gets max(1, cores // nproc) threads (OMP_NUM_THREADS and torch.set_num_threads).
    `timeout_s` (--comm-timeout) bounds how long any one collective waits for the other ranks; the
    launch is stopped after that plus 3x the budget and a minute of start-up. A rank that crashes or
    hangs is named in the error, with what it was doing."""
    threads = max(1, cores // nproc)
    limit_s = (timeout_s if timeout_s is not None else 60) + 3 * budget_s + 60
    for attempt in range(2):   # gloo occasionally aborts a rank on loopback (SIGABRT): launch once more
        with tempfile.TemporaryDirectory(prefix="simkit-comm-") as tmp:
            output, log = Path(tmp) / "collectives.json", Path(tmp) / "workers.log"
            command = worker_command(nproc, str(output), device=device, sizes=sizes, budget_s=budget_s,
                                     threads=threads, min_samples=min_samples, max_samples=max_samples,
                                     emulate_reduce_scatter=emulate_reduce_scatter, timeout_s=timeout_s)
            process = launch.start(command, log, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
            finished = launch.wait(process, limit_s, on_wait)
            text = launch.read(log)
            if not finished:
                raise SimkitError(launch.hang(text, "simkit-comm", "the collective benchmark", limit_s,
                                              "--comm-timeout"), key="--comm")
            if process.returncode == 0 and output.exists():
                return json.loads(output.read_text(encoding="utf-8"))
            if attempt == 1 or "(SIGABRT) received" not in text:
                raise SimkitError(launch.failure(text, "simkit-comm", "the collective benchmark", process.returncode),
                                  key="--comm")


_stop = launch.stop              # simkit.measure.nodes stops its launches the same way
_last_error = launch.last_error
