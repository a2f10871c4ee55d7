"""`simkit calibrate`: measure this machine and describe it as a device profile (docs/DESIGN.md).

`run` plans every benchmark against a time budget and measures (no printing; progress goes to a
callback); `profile_dict` turns the result into a calibrated device profile that
`simkit.hardware.load_device` accepts; `history_record` into one history-store record;
`summary_rows` into the table the CLI prints. torch is imported by `run` only.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Literal

from simkit import __version__
from simkit.core.errors import SimkitError

if TYPE_CHECKING:
    from simkit.measure.attention import AttentionResult, AttentionShape
    from simkit.measure.bandwidth import BandwidthResult
    from simkit.measure.collectives import CollectiveResult, CollectivesResult
    from simkit.measure.gemm import GemmResult
    from simkit.measure.timing import Budget

GIB, MIB, KIB = 2**30, 2**20, 2**10
Progress = Callable[[str, float, float], None]
"""on_progress(what is being measured, seconds elapsed, seconds planned)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Settings:
    """What the user asked for on the command line."""

    device: Literal["cpu", "cuda"]
    quick: bool = False
    threads: int
    """torch threads; on CPU the number of cores used."""
    comm: bool = False
    nproc: int = 2
    """Processes for the collective benchmark (with `comm`); per node with `nnodes` > 1."""
    nnodes: int = 1
    """Nodes of the collective benchmark; > 1 measures within each node and across the nodes."""
    node_rank: int | None = None
    """This node (0 .. nnodes-1) when every node runs the command; None with nnodes > 1: all nodes are
    simulated on loopback by this one process."""
    rdzv_endpoint: str | None = None
    """HOST:PORT of node 0, where the nodes meet (torchrun c10d rendezvous); with `node_rank`."""
    comm_timeout_s: float = 300.0
    """How long a rank waits for the others in any one collective (and a node for the others to join
    the rendezvous); a launch that hangs is stopped after this plus the planned time."""

    @property
    def multinode(self) -> bool:
        return self.comm and self.nnodes > 1


@dataclass(frozen=True, kw_only=True, slots=True)
class Plan:
    """What to measure and how long each part may take (seconds, wall clock)."""

    gemm_sizes: tuple[int, int]
    """Smallest and largest GEMM dimension of the shape grid."""
    dtypes: tuple[str, ...] | None = None
    """GEMM dtypes; None: every dtype the device supports."""
    bandwidth_sizes: tuple[int, ...]
    """Working-set sizes in bytes."""
    attention_shapes: tuple[AttentionShape, ...]
    comm_sizes: tuple[int, ...] = ()
    seconds: dict[str, float]
    """Time budget per part: matmul, bandwidth, attention, collectives."""
    min_samples: int = 5
    """Samples per benchmark over the whole run (all rounds together), at least."""
    max_samples: int = 30
    max_warmup_s: float = 0.5
    min_sample_s: float = 2e-3
    rounds: int = 3
    """Passes over the whole benchmark list. Samples taken back to back share one machine state
    (clock, neighbours, page placement) and drift together; spreading each benchmark's samples over
    the run puts that drift into its spread, so two quiet runs do not differ "significantly"."""

    def item_budget(self, seconds: float) -> Budget:
        """Budget of one measurement in one round given its share of the time: 15% warm-up (capped),
        the run's sample counts split over the rounds."""
        from simkit.measure.timing import Budget

        warmup = min(0.15 * seconds, self.max_warmup_s)
        low = math.ceil(self.min_samples / self.rounds)
        return Budget(warmup_s=warmup, measure_s=max(seconds - warmup, 0.0), min_samples=low,
                      max_samples=max(low, self.max_samples // self.rounds), min_sample_s=self.min_sample_s)


@dataclass(frozen=True, kw_only=True, slots=True)
class CalibrationResult:
    settings: Settings
    date: str
    """UTC, ISO 8601 with Z."""
    environment: dict
    matmul: list[GemmResult]
    bandwidth: list[BandwidthResult]
    attention: list[AttentionResult]
    collectives: CollectivesResult | None
    elapsed_s: float
    rounds: int = 1
    """Interleaved passes over the benchmark list (Plan.rounds)."""
    warnings: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- planning
def default_plan(settings: Settings, cache_bytes: int, memory_bytes: int | None) -> Plan:
    """Shapes, sizes and budgets: --quick fits in 60 s on a 2-core CPU, the full run in 5 minutes."""
    gpu, quick = settings.device == "cuda", settings.quick
    top = (8192 if quick else 16384) if gpu else (2048 if quick else 4096)
    return Plan(
        gemm_sizes=(64, top),
        bandwidth_sizes=_bandwidth_sizes(gpu, quick, cache_bytes, memory_bytes),
        attention_shapes=_attention_shapes(gpu, quick),
        comm_sizes=_comm_sizes(gpu, quick),
        seconds={"matmul": 20, "bandwidth": 7, "attention": 7, "collectives": 15} if quick
        else {"matmul": 150, "bandwidth": 45, "attention": 50, "collectives": 60},
        min_samples=5 if quick else 8, max_samples=24 if quick else 50, rounds=5 if quick else 8,
        max_warmup_s=0.25 if quick else 1.0, min_sample_s=1e-3 if gpu else 2e-3)


def _bandwidth_sizes(gpu: bool, quick: bool, cache_bytes: int, memory_bytes: int | None) -> tuple[int, ...]:
    """Working sets from in-cache to memory-sized. STREAM asks for arrays of 4x the cache each; a
    total of 2x the last-level cache (capped at memory/8) keeps --quick short and is the size the
    profile's memory_bandwidth comes from (calibration.memory_bandwidth shows the size dependence)."""
    memory = 2 ** math.ceil(math.log2(2 * cache_bytes))
    if memory_bytes:
        memory = min(memory, 2 ** int(math.log2(memory_bytes // 8)))
    if quick:
        sizes = (64 * MIB, GIB, memory) if gpu else (4 * MIB, 64 * MIB, memory)
    else:
        sizes = (MIB, 4 * MIB, 16 * MIB, 64 * MIB, 256 * MIB, memory) + ((GIB, 4 * GIB) if gpu else ())
    return tuple(sorted(set(sizes)))


def _attention_shapes(gpu: bool, quick: bool) -> tuple[AttentionShape, ...]:
    from simkit.measure.attention import AttentionShape

    dtypes = ("bf16", "fp16") if gpu else ("fp32", "bf16")
    # (batch, heads, seq_len, head_dim); two sequence lengths at least: the rate depends strongly on it
    # (bf16 SDPA backward on a 2-core Xeon: 13 GFLOP/s at 128 tokens, 37 at 512, 78 at 2048)
    dims = [(8, 16, 2048, 128), (32, 16, 512, 128)] if gpu else [(8, 4, 128, 64), (4, 8, 512, 64)]
    if not quick:
        dims += [(4, 16, 4096, 128), (8, 32, 1024, 64)] if gpu else [(2, 16, 1024, 128), (1, 8, 2048, 64)]
    return tuple(AttentionShape(batch=b, heads=h, seq_len=s, head_dim=d, dtype=t)
                 for t in dtypes for (b, h, s, d) in dims)


def _comm_sizes(gpu: bool, quick: bool) -> tuple[int, ...]:
    """4 KiB up to 16 MiB (quick) / 64 MiB on CPU, 256 MiB / 1 GiB on GPU; x16 or x4 apart."""
    top = (256 * MIB if quick else GIB) if gpu else (16 * MIB if quick else 64 * MIB)
    step, sizes = (16 if quick else 4), [4 * KIB]
    while sizes[-1] * step <= top:
        sizes.append(sizes[-1] * step)
    return tuple(sizes)


def planned_seconds(plan: Plan, settings: Settings) -> float:
    parts = ("matmul", "bandwidth", "attention") + (("collectives",) * collective_sections(settings))
    return float(sum(plan.seconds[p] for p in parts))


def collective_sections(settings: Settings) -> int:
    """Sets of collectives measured: within the node, and across nodes when there are several (one rank
    per node has nothing to measure within the node). Each gets the plan's collectives budget."""
    if not settings.comm:
        return 0
    return 1 if not settings.multinode else (2 if settings.nproc > 1 else 1)


# ----------------------------------------------------------------------------- measuring
def check_settings(settings: Settings) -> None:
    """Reject impossible settings with a sentence the user can act on."""
    if settings.threads < 1:
        raise SimkitError(f"{settings.threads} must be at least 1", key="--threads")
    if settings.comm and settings.nnodes < 1:
        raise SimkitError(f"{settings.nnodes} must be at least 1", key="--nnodes")
    if settings.comm and settings.nnodes == 1 and settings.nproc < 2:
        raise SimkitError(f"{settings.nproc} must be at least 2 (a collective needs two processes)", key="--nproc")
    if settings.multinode:
        _check_nodes(settings)
    if settings.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise SimkitError(f"CUDA is not available to torch {torch.__version__}; use --device cpu",
                              key="--device")
        if settings.comm and settings.nproc > torch.cuda.device_count():
            raise SimkitError(f"{settings.nproc} processes need as many GPUs; this machine has "
                              f"{torch.cuda.device_count()}", key="--nproc")


def _check_nodes(settings: Settings) -> None:
    """The flags of a run across nodes (a sentence naming the flag for each mistake)."""
    from simkit.measure.nodes import parse_endpoint

    if settings.nproc < 1:
        raise SimkitError(f"{settings.nproc} must be at least 1", key="--nproc")
    if settings.comm_timeout_s <= 0:
        raise SimkitError(f"{settings.comm_timeout_s:g} must be a positive number of seconds", key="--comm-timeout")
    rank, last = settings.node_rank, settings.nnodes - 1
    if rank is not None and not 0 <= rank <= last:
        raise SimkitError(f"{rank} is out of range for --nnodes {settings.nnodes} (0 to {last})", key="--node-rank")
    if rank is not None and settings.rdzv_endpoint is None:
        raise SimkitError("needs --rdzv-endpoint HOST:PORT (node 0's address, the same on every node)",
                          key="--node-rank")
    if rank is None and settings.rdzv_endpoint is not None:
        raise SimkitError(f"needs --node-rank (this node's rank, 0 to {last}); without both, the nodes are "
                          "simulated on loopback", key="--rdzv-endpoint")
    if settings.rdzv_endpoint is not None:
        parse_endpoint(settings.rdzv_endpoint)


def node_launch(settings: Settings):
    """The torchrun launches of a run across nodes (simkit.measure.nodes.NodeLaunch)."""
    from simkit.measure.nodes import NodeLaunch, loopback_endpoint

    loopback = settings.node_rank is None
    return NodeLaunch(nnodes=settings.nnodes, nproc_per_node=settings.nproc,
                      node_ranks=tuple(range(settings.nnodes)) if loopback else (settings.node_rank,),
                      endpoint=loopback_endpoint() if loopback else settings.rdzv_endpoint,
                      timeout_s=settings.comm_timeout_s)


def run(settings: Settings, plan: Plan | None = None, on_progress: Progress = lambda what, done, total: None,
        ) -> CalibrationResult:
    """Measure everything the plan lists. Raises KeyboardInterrupt through (nothing is written here)."""
    check_settings(settings)
    from simkit.measure import Target, cpu_ticks, device_facts, interference, last_level_cache_bytes
    from simkit.measure.timing import configured

    began, ticks = time.monotonic(), cpu_ticks()
    date = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    target = Target(kind=settings.device, threads=settings.threads)
    environment = device_facts(target)
    environment["last_level_cache_bytes"] = last_level_cache_bytes(target)
    plan = plan or default_plan(settings, environment["last_level_cache_bytes"], environment["memory_bytes"])
    total = planned_seconds(plan, settings)

    def report(label: str) -> None:
        on_progress(label, time.monotonic() - began, total)

    comm_label = _comm_label(settings)
    collectives = None
    if settings.multinode:  # first: the other nodes wait in the rendezvous only for the start-up skew
        collectives = _collectives(settings, plan, lambda: report(comm_label))
    with configured(target):
        matmul, memory, attn = _measure_rounds(target, plan, report)
    if settings.comm and not settings.multinode:
        collectives = _collectives(settings, plan, lambda: report(comm_label))
    report("done")
    environment.update(interference(ticks, cpu_ticks()))
    result = CalibrationResult(settings=settings, date=date, environment=environment, matmul=matmul,
                               bandwidth=memory, attention=attn, collectives=collectives,
                               elapsed_s=time.monotonic() - began, rounds=plan.rounds)
    result.warnings.extend(_noisy(result))
    return result


def _measure_rounds(target, plan: Plan, report: Callable[[str], None]):
    """matmul, bandwidth and attention results, measured in `plan.rounds` interleaved passes: each
    pass samples every benchmark (fresh inputs, its own warm-up), so a benchmark's samples span the
    run. Each part gets what is left of its budget divided by the passes left."""
    from simkit.measure import attention, bandwidth, gemm

    dtypes = list(plan.dtypes) if plan.dtypes is not None else gemm.supported_dtypes(target)
    shapes = gemm.gemm_shapes(plan.gemm_sizes[1], plan.gemm_sizes[0])
    matmul = memory = attn = None
    spent = dict.fromkeys(("matmul", "bandwidth", "attention"), 0.0)
    for done in range(plan.rounds):
        share = {part: max(plan.seconds[part] - spent[part], 0.0) / (plan.rounds - done) for part in spent}
        on_item = lambda label, r=done: report(f"{label} (round {r + 1}/{plan.rounds})")  # noqa: E731
        with _timed(spent, "matmul"):
            matmul = gemm.sweep(target, dtypes, shapes, share["matmul"], item_budget=plan.item_budget,
                                on_item=on_item, rounds=plan.rounds, previous=matmul)
        with _timed(spent, "bandwidth"):
            memory = bandwidth.sweep(target, list(plan.bandwidth_sizes), share["bandwidth"],
                                     item_budget=plan.item_budget, on_item=on_item, previous=memory)
        with _timed(spent, "attention"):
            attn = attention.sweep(target, list(plan.attention_shapes), share["attention"],
                                   item_budget=plan.item_budget, on_item=on_item, previous=attn)
    return matmul, memory, attn


@contextlib.contextmanager
def _timed(spent: dict[str, float], part: str) -> Iterator[None]:
    """Add the wall time of the block to `spent[part]`."""
    began = time.monotonic()
    try:
        yield
    finally:
        spent[part] += time.monotonic() - began


def _collectives(settings: Settings, plan: Plan, on_wait: Callable[[], None]) -> CollectivesResult:
    from simkit.measure import cpu_count
    from simkit.measure.collectives import run_workers, summarize

    cores = settings.threads if settings.device == "cpu" else cpu_count()
    if settings.multinode:
        from simkit.measure.nodes import run_nodes

        launch = node_launch(settings)
        raw = run_nodes(launch, device=settings.device, sizes=list(plan.comm_sizes),
                        budget_s=plan.seconds["collectives"], cores=cores, min_samples=plan.min_samples,
                        max_samples=plan.max_samples, on_wait=on_wait)
        return summarize(raw, launch=launch.describe())
    raw = run_workers(settings.nproc, device=settings.device, sizes=list(plan.comm_sizes),
                      budget_s=plan.seconds["collectives"], cores=cores, min_samples=plan.min_samples,
                      max_samples=plan.max_samples, timeout_s=settings.comm_timeout_s, on_wait=on_wait)
    return summarize(raw)


def join_collectives(settings: Settings, on_progress: Progress = lambda what, done, total: None,
                     ) -> CollectivesResult:
    """Node `settings.node_rank` > 0 of a run across nodes: take part in the collective benchmark with
    the plan node 0 uses (the ranks check they agree) and measure nothing else; node 0 writes the profile."""
    check_settings(settings)
    from simkit.measure import Target, device_facts, last_level_cache_bytes

    target = Target(kind=settings.device, threads=settings.threads)
    plan = default_plan(settings, last_level_cache_bytes(target), device_facts(target)["memory_bytes"])
    began = time.monotonic()
    label, planned = _comm_label(settings), planned_seconds(plan, settings)
    return _collectives(settings, plan, lambda: on_progress(label, time.monotonic() - began, planned))


def _comm_label(settings: Settings) -> str:
    """What the progress bar shows while the collectives run."""
    processes = f"{settings.nproc} process{'es' if settings.nproc != 1 else ''}"
    if not settings.multinode:
        return f"collectives ({processes})"
    nodes = "loopback nodes" if settings.node_rank is None else "nodes"
    return f"collectives ({settings.nnodes} {nodes} x {processes})"


def _noisy(result: CalibrationResult) -> list[str]:
    env = result.environment
    warnings = []
    others, stolen = env.get("cpu_share_used_by_others", 0.0), env.get("cpu_share_stolen", 0.0)
    if others > 0.1 or stolen > 0.05:
        warnings.append(f"other programs used {others:.0%} of the CPU time during the run and the hypervisor "
                        f"took {stolen:.0%}: the numbers are likely low; run again on a quiet machine")
    noisy = [f"matmul {r.dtype} {_shape(r.shape)}" for r in result.matmul if not r.extrapolated and r.rate.noisy]
    noisy += [f"bandwidth {r.pattern} {size_label(r.working_set_bytes)}" for r in result.bandwidth if r.rate.noisy]
    noisy += [f"attention {r.shape.label}" for r in result.attention if r.forward.noisy or r.backward.noisy]
    if noisy:
        warnings.append(f"{len(noisy)} measurement(s) varied by more than 10% (IQR/median), e.g. "
                        f"{', '.join(noisy[:3])}")
    return warnings


# ----------------------------------------------------------------------------- the profile
def _sig(x: float, digits: int = 4) -> float:
    """Round to significant digits, so the YAML stays readable."""
    return float(f"{x:.{digits}g}")


def _shape(shape: tuple[int, int, int]) -> str:
    return "x".join(map(str, shape))


def size_label(size_bytes: int) -> str:
    """4096 -> '4KiB', 67108864 -> '64MiB' (exact binary multiples; else bytes)."""
    for unit, scale in (("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if size_bytes >= scale and size_bytes % scale == 0:
            return f"{size_bytes // scale}{unit}"
    return f"{size_bytes}B"


def best_peaks(result: CalibrationResult) -> dict[str, GemmResult]:
    """Best measured (not extrapolated) GEMM per dtype."""
    best: dict[str, GemmResult] = {}
    for r in result.matmul:
        if not r.extrapolated and (r.dtype not in best or r.rate.median > best[r.dtype].rate.median):
            best[r.dtype] = r
    return best


def best_bandwidth(result: CalibrationResult) -> BandwidthResult:
    """Best copy/triad median at working sets of at least 2x the last-level cache (served from
    memory); the largest size measured if none is that large."""
    streams = [r for r in result.bandwidth if r.pattern in ("copy", "triad")]
    if not streams:
        raise SimkitError("no copy or triad bandwidth was measured; the profile needs one")
    cache = result.environment.get("last_level_cache_bytes", 0)
    large = [r for r in streams if r.working_set_bytes >= 2 * cache]
    if not large:
        biggest = max(r.working_set_bytes for r in streams)
        large = [r for r in streams if r.working_set_bytes == biggest]
    return max(large, key=lambda r: r.rate.median)


def profile_dict(result: CalibrationResult) -> dict:
    """The calibrated device profile (docs/DESIGN.md, 'Calibrated profile')."""
    env, s = result.environment, result.settings
    measured = f"measured by simkit calibrate on {env['host']} {result.date}"
    peaks = best_peaks(result)
    if not peaks:
        raise SimkitError("no GEMM was measured; the profile needs at least one dtype")
    bw = best_bandwidth(result)
    if not env.get("memory_bytes"):
        raise SimkitError("could not read the memory size (/proc/meminfo or torch.cuda); the profile needs it")
    memory_source = "torch.cuda total_memory" if s.device == "cuda" else "/proc/meminfo MemTotal"
    return {
        "name": f"calibrated-{s.device}-{re.sub(r'[^a-z0-9]+', '-', env['host'].lower()).strip('-')}",
        "kind": "device",
        "description": f"{env['device_name']} ({s.threads} threads), calibrated",
        "memory_gib": {"value": _sig(env["memory_bytes"] / GIB), "source": f"{measured}: {memory_source}"},
        "memory_bandwidth_gb_per_s": {
            "value": _sig(bw.rate.median / 1e9),
            "source": f"{measured}: best median of copy/triad ({bw.pattern} {size_label(bw.working_set_bytes)})"},
        "peak_tflops": {dtype: {"value": _sig(r.rate.median / 1e12), "dense": True,
                                "source": f"{measured}: best median GEMM throughput ({_shape(r.shape)}, "
                                          f"{len(r.rate.samples)} samples)"}
                        for dtype, r in peaks.items()},
        "matmul_efficiency": {"default": {
            "value": 1.0, "source": "peak_tflops holds the best measured GEMM throughput, so the achievable "
                                    "fraction is 1.0 by construction; calibration.matmul gives the shape dependence"}},
        "calibration": _calibration_section(result),
    }


def _calibration_section(result: CalibrationResult) -> dict:
    section = {
        "date": result.date,
        "simkit_version": __version__,
        "environment": {k: v for k, v in result.environment.items()},
        "settings": {"device": result.settings.device, "quick": result.settings.quick,
                     "threads": result.settings.threads, "elapsed_s": round(result.elapsed_s, 1)},
        "method": {
            "timing": f"the benchmark list is measured in {result.rounds} interleaved rounds; in each round "
                      "every benchmark gets fresh inputs, a warm-up by time budget, then repeated samples (calls "
                      "repeated until a sample lasts >= 1-2 ms; CUDA events on GPU), so its samples span the "
                      "whole run; median and IQR (75th-25th percentile) of all its samples",
            "matmul": "torch.matmul(a, b, out=c) on random data (fp8: torch._scaled_mm, CUDA only: CPUs have no "
                      "fp8 matrix units and torch._scaled_mm on CPU is a slow emulation whose throughput swings "
                      "widely between runs, so fp8 is not measured there), inputs rotated "
                      "through copies covering 2x the GPU L2 / CPU per-core L2 (at most 64 copies, 1 GiB); "
                      "2*m*n*k FLOP per call",
            "memory_bandwidth": "bytes read + written per second (STREAM counting); optimizer_step is one "
                                "fused AdamW update of a flat fp32 tensor, 7 array accesses per element; first_touch "
                                "(CPU) writes a freshly allocated tensor: page faults included",
            "attention": "F.scaled_dot_product_attention; forward FLOP 4*b*h*s*s*d, halved for causal, "
                         "backward 2.5x forward (FlashAttention-2 convention)",
        },
        "matmul": {},
        "memory_bandwidth": {},
        "attention": [_attention_row(r) for r in result.attention],
    }
    for r in result.matmul:
        section["matmul"].setdefault(r.dtype, []).append(_matmul_row(r))
    for r in result.bandwidth:
        section["memory_bandwidth"].setdefault(r.pattern, []).append(
            {"bytes": r.working_set_bytes, "bytes_per_s_median": _sig(r.rate.median),
             "bytes_per_s_iqr": _sig(r.rate.iqr), "samples": len(r.rate.samples), "implementation": r.implementation})
    if result.collectives is not None:
        section["collectives"] = _collectives_section(result.collectives)
        if result.collectives.inter_node is not None:
            section["method"]["inter_node"] = (
                f"{result.collectives.launch}. Every op and size is measured within each node (a process group "
                "per node, all nodes at once) and right after over all ranks of all nodes; each sample is the "
                "slowest rank's time")
    return section


def _matmul_row(r: GemmResult) -> dict:
    m, n, k = r.shape
    row = {"m": m, "n": n, "k": k, "flop_per_s_median": _sig(r.rate.median), "flop_per_s_iqr": _sig(r.rate.iqr),
           "samples": len(r.rate.samples), "extrapolated": r.extrapolated}
    if r.extrapolated:
        from simkit.measure.gemm import EXTRAPOLATION

        row.update(extrapolated_from=_shape(r.measured_shape), extrapolation=EXTRAPOLATION)
    return row


def _attention_row(r: AttentionResult) -> dict:
    s = r.shape
    return {"batch": s.batch, "heads": s.heads, "seq_len": s.seq_len, "head_dim": s.head_dim, "dtype": s.dtype,
            "causal": s.causal, "forward_flop_per_s_median": _sig(r.forward.median),
            "forward_flop_per_s_iqr": _sig(r.forward.iqr), "backward_flop_per_s_median": _sig(r.backward.median),
            "backward_flop_per_s_iqr": _sig(r.backward.iqr), "samples": len(r.forward.samples)}


def _collectives_section(c: CollectivesResult) -> dict:
    """`calibration.collectives`: the fits within one node, and across nodes under `inter_node`."""
    section: dict = {"backend": c.backend, "nproc": c.nproc, "threads_per_worker": c.threads_per_worker}
    if c.concurrent_matmul:
        section["concurrent_matmul"] = {**{key: c.concurrent_matmul[key] for key in ("m", "n", "k", "dtype")},
                                        "flop_per_s_median": _sig(c.concurrent_matmul["flop_per_s_median"]),
                                        "samples": c.concurrent_matmul.get("samples")}
    section.update({op: _collective_entry(r) for op, r in c.ops.items()})
    if c.inter_node is not None:
        i = c.inter_node
        section["inter_node"] = {"nnodes": i.nnodes, "nproc_per_node": i.nproc_per_node, "nproc": i.nproc,
                                 **{op: _collective_entry(r) for op, r in i.ops.items()}}
    return section


def _collective_entry(r: CollectiveResult) -> dict:
    return {
        "latency_us": _sig(r.latency_s * 1e6), "bus_bandwidth_gb_per_s": _sig(r.bus_bandwidth_bytes_per_s / 1e9),
        "algorithm": r.algorithm,
        "fit": "least squares on time = latency + bus_factor*bytes/busbw, residuals relative to time",
        "fit_max_relative_error": _sig(r.fit_max_relative_error, 2),
        "points": [{"bytes": p.size_bytes, "time_s_median": _sig(p.time_s_median), "time_s_iqr": _sig(p.time_s_iqr),
                    "algbw_gb_per_s": _sig(p.algbw_bytes_per_s / 1e9),
                    "busbw_gb_per_s": _sig(p.busbw_bytes_per_s / 1e9), "samples": len(p.seconds)}
                   for p in r.points]}


def profile_text(result: CalibrationResult) -> str:
    import yaml

    header = (f"# Calibrated device profile written by `simkit calibrate` ({result.elapsed_s:.0f} s).\n"
              f"# Use it as `hardware.device: <this file>` in a plan.\n")
    return header + yaml.safe_dump(profile_dict(result), sort_keys=False, width=120)


# ----------------------------------------------------------------------------- history
def _entry(unit: str, samples, round_medians=()) -> dict:
    from simkit.track.history import benchmark_entry

    entry = benchmark_entry([_sig(x, 6) for x in samples], unit, higher_is_better=True)
    if len(round_medians) > 1:
        entry["round_medians"] = [_sig(x, 6) for x in round_medians]
    return entry


def history_record(result: CalibrationResult) -> dict:
    """One record for the history store (docs/DESIGN.md, 'History record'); measured points only."""
    from simkit.track.history import fingerprint_of, git_revision, new_record_id

    s = result.settings
    benchmarks = {}
    for r in result.matmul:
        if not r.extrapolated:
            benchmarks[f"matmul.{r.dtype}.{_shape(r.shape)}"] = _entry(r.rate.unit, r.rate.samples,
                                                                         r.rate.round_medians)
    for r in result.bandwidth:
        benchmarks[f"bandwidth.{r.pattern}.{size_label(r.working_set_bytes)}"] = _entry(r.rate.unit, r.rate.samples,
                                                                                       r.rate.round_medians)
    for r in result.attention:
        for part, rate in (("fwd", r.forward), ("bwd", r.backward)):
            benchmarks[f"attention.{part}.{r.shape.label}"] = _entry(rate.unit, rate.samples, rate.round_medians)
    if result.collectives is not None:
        for op, c in result.collectives.ops.items():
            for p in c.points:
                benchmarks[f"{op}.busbw.{size_label(p.size_bytes)}"] = _entry("bytes_per_s", p.busbw_samples)
        inter = result.collectives.inter_node
        for op, c in (inter.ops.items() if inter is not None else ()):
            for p in c.points:
                benchmarks[f"inter_node.{op}.busbw.{size_label(p.size_bytes)}"] = _entry("bytes_per_s",
                                                                                        p.busbw_samples)
    return {
        "id": new_record_id(result.date),
        "timestamp": result.date,
        "git_revision": git_revision(Path(__file__).resolve().parent),
        "fingerprint": fingerprint_of(result.environment),
        "settings": {"device": s.device, "quick": s.quick, "threads": s.threads, "comm": s.comm,
                     "nproc": s.nproc if s.comm else None, **({"nnodes": s.nnodes} if s.multinode else {})},
        "benchmarks": benchmarks,
    }


# ----------------------------------------------------------------------------- the summary
def match_catalogue(device_name: str, names: list[str] | tuple[str, ...]) -> str | None:
    """The catalogue device a CUDA device name refers to ('NVIDIA H100 80GB HBM3' -> 'h100-sxm').

    A candidate's first name part must be a word of the device name (the chip); its other parts
    count as matches (form factor, memory). NVIDIA names SXM parts without a form factor, so
    without one in the name 'sxm' entries are preferred."""
    words = re.sub(r"[^a-z0-9]+", " ", device_name.lower()).split()
    form_factor = any(w.startswith(("pcie", "sxm", "nvl")) for w in words)
    best, best_score = None, -1.0
    for name in names:
        chip, *rest = name.lower().split("-")
        if chip not in words:
            continue
        score = sum(any(w.startswith(part) for w in words) for part in rest)
        if not form_factor and "sxm" in rest:
            score += 0.5
        if score > best_score:
            best, best_score = name, score
    return best


def catalogue_device(result: CalibrationResult):
    """The catalogue entry to compare with (None when there is none)."""
    from simkit.hardware import catalogue_names, load_device

    try:
        names = catalogue_names("device")
        name = "cpu" if result.settings.device == "cpu" else match_catalogue(result.environment["device_name"], names)
        return load_device(name) if name in names else None
    except (SimkitError, OSError):
        return None


def summary_rows(result: CalibrationResult, catalogue=None) -> list[tuple[str, float, float | None]]:
    """(quantity with unit, measured, catalogue value or None) for the end-of-run table."""
    rows = []
    for dtype, r in best_peaks(result).items():
        peak = catalogue.peak(dtype) if catalogue is not None else None
        rows.append((f"{dtype} matmul TFLOP/s", r.rate.median / 1e12, peak / 1e12 if peak else None))
    bw = best_bandwidth(result)
    rows.append(("memory bandwidth GB/s", bw.rate.median / 1e9,
                 catalogue.memory_bandwidth_bytes_per_s / 1e9 if catalogue is not None else None))
    return rows + _all_reduce_rows(result.collectives)


def _all_reduce_rows(c: CollectivesResult | None) -> list[tuple[str, float, None]]:
    """All-reduce fit rows; across nodes, within one node and across all of them side by side."""
    if c is None:
        return []
    fits = [("", c.ops.get("all_reduce"))]
    if c.inter_node is not None:
        nodes = c.inter_node.nnodes
        fits = [(f", 1 node x {c.nproc}", fits[0][1]),
                (f", {nodes} nodes x {c.inter_node.nproc_per_node}", c.inter_node.ops.get("all_reduce"))]
    fits = [(where, fit) for where, fit in fits if fit is not None]
    return ([(f"all-reduce busbw GB/s (fit{where})", fit.bus_bandwidth_bytes_per_s / 1e9, None) for where, fit in fits]
            + [(f"all-reduce latency us (fit{where})", fit.latency_s * 1e6, None) for where, fit in fits])
