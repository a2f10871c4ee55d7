"""Micro-benchmarks that measure this machine (used by `simkit calibrate`).

- `timing`      timers (CPU clock or CUDA events), warm-up by time budget, median and IQR
- `gemm`        matmul throughput over a grid of shapes and dtypes
- `bandwidth`   memory copy, triad and a fused AdamW pass (bytes moved per second)
- `attention`   scaled_dot_product_attention forward and backward (FLOP/s)
- `collectives` all-reduce, reduce-scatter, all-gather across processes (torchrun workers)
- `nodes`       the same across nodes: torchrun launches meeting at a c10d rendezvous (or on loopback)

This module says *what* is measured: the `Target` (device kind and thread count) and the facts
recorded with every result (device name, versions, flags). torch is imported inside functions
only, so importing this package stays cheap.
"""
from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from typing import Literal

GIB = 2**30


@dataclass(frozen=True, kw_only=True, slots=True)
class Target:
    """The device a benchmark runs on."""

    kind: Literal["cpu", "cuda"]
    """`cpu` or `cuda` (device 0)."""
    threads: int
    """torch intra-op threads, set explicitly before measuring (CPU work on CUDA too)."""

    @property
    def tensor_device(self) -> str:
        """The torch device string tensors are allocated on."""
        return "cuda:0" if self.kind == "cuda" else "cpu"


def cpu_count() -> int:
    """CPUs this process may run on (respects taskset/cgroup affinity)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    """`model name` from /proc/cpuinfo, else platform.processor()."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def host_memory_bytes() -> int | None:
    """MemTotal from /proc/meminfo (no psutil needed)."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024  # the file says kB, meaning KiB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cpu_caches() -> dict[int, int]:
    """Cache level -> size in bytes for cpu0 (data/unified caches, from sysfs)."""
    root, caches = "/sys/devices/system/cpu/cpu0/cache", {}
    try:
        entries = os.listdir(root)
    except OSError:
        return caches
    for entry in entries:
        try:
            with open(f"{root}/{entry}/level", encoding="utf-8") as fh:
                level = int(fh.read())
            with open(f"{root}/{entry}/type", encoding="utf-8") as fh:
                if fh.read().strip() == "Instruction":
                    continue
            with open(f"{root}/{entry}/size", encoding="utf-8") as fh:
                text = fh.read().strip()
        except (OSError, ValueError):
            continue
        scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        caches[level] = int(text.rstrip("KMG")) * scale
    return caches


def _gpu_l2_bytes() -> int:
    import torch

    return int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 0)) or 64 * 2**20


def last_level_cache_bytes(target: Target) -> int:
    """The GPU's L2, or the CPU's highest-level cache: data bigger than twice this comes from memory."""
    if target.kind == "cuda":
        return _gpu_l2_bytes()
    caches = _cpu_caches()
    return caches[max(caches)] if caches else 32 * 2**20  # unknown: assume a typical server L3


def operand_cache_bytes(target: Target) -> int:
    """The cache GEMM operands should not sit in between calls: the GPU's L2 (as triton's do_bench
    flushes it), the CPU's per-core L2. A CPU's shared L3 is left warm: a training step's GEMMs find
    freshly written activations there, and cold operands would make small machines' GEMMs
    memory-bound (the memory itself is measured by the bandwidth benchmark)."""
    if target.kind == "cuda":
        return _gpu_l2_bytes()
    caches = _cpu_caches()
    if 2 in caches:
        return caches[2]
    return caches[max(caches)] if caches else 2 * 2**20


@dataclass(frozen=True, slots=True)
class CpuTicks:
    """System-wide CPU time from /proc/stat and this process's own (children included), in seconds."""

    total_s: float
    idle_s: float
    steal_s: float
    own_s: float


def cpu_ticks() -> CpuTicks | None:
    """Now's counters (None where /proc/stat is missing)."""
    try:
        with open("/proc/stat", encoding="utf-8") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    hz = os.sysconf("SC_CLK_TCK")
    # user nice system idle iowait irq softirq steal (guest time is already inside user)
    total, idle, steal = sum(fields[:8]), fields[3] + fields[4], fields[7] if len(fields) > 7 else 0
    own = os.times()
    return CpuTicks(total / hz, idle / hz, steal / hz, own.user + own.system + own.children_user + own.children_system)


def interference(before: CpuTicks | None, after: CpuTicks | None) -> dict:
    """Share of all CPU time between two readings that other programs used, and that the
    hypervisor took (steal): what makes a measurement on a shared machine slow and noisy."""
    if before is None or after is None or after.total_s <= before.total_s:
        return {}
    total = after.total_s - before.total_s
    busy = total - (after.idle_s - before.idle_s) - (after.steal_s - before.steal_s)
    others = max(busy - (after.own_s - before.own_s), 0.0)
    return {"cpu_share_used_by_others": round(others / total, 3),
            "cpu_share_stolen": round((after.steal_s - before.steal_s) / total, 3)}


def nvidia_smi_facts() -> dict:
    """Driver, clocks and power limit from nvidia-smi (empty when it is not there)."""
    fields = ("driver_version", "clocks.max.sm", "clocks.max.mem", "power.limit")
    try:
        out = subprocess.run(["nvidia-smi", "--id=0", f"--query-gpu={','.join(fields)}",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    values = [v.strip() for v in out.strip().splitlines()[0].split(",")] if out.strip() else []
    if len(values) != len(fields):
        return {}
    names = ("driver_version", "max_sm_clock_mhz", "max_memory_clock_mhz", "power_limit_w")
    facts = {}
    for name, value in zip(names, values):
        try:
            facts[name] = value if name == "driver_version" else float(value)
        except ValueError:  # "[N/A]"
            facts[name] = None
    return facts


def device_facts(target: Target) -> dict:
    """What the results were measured on: recorded in the profile's `calibration.environment`."""
    import torch

    facts = {
        "host": platform.node(),
        "device_name": cpu_model(),
        "torch_version": str(torch.__version__),
        "cuda_version": str(torch.version.cuda) if torch.version.cuda else None,
        "threads": target.threads,
        "tf32_enabled": False,  # fp32 is measured with TF32 off; the tf32 rows turn it on
        "flush_denormal": False,  # set explicitly (torch's default) before measuring
        "cpu_model": cpu_model(),
        "cpu_count": cpu_count(),
        "memory_bytes": host_memory_bytes(),
        "python_version": platform.python_version(),
        "driver_version": None,
    }
    if target.kind == "cuda":
        props = torch.cuda.get_device_properties(0)
        facts.update(device_name=props.name, memory_bytes=int(props.total_memory),
                     compute_capability=f"{props.major}.{props.minor}",
                     multiprocessors=int(props.multi_processor_count))
        facts.update(nvidia_smi_facts())
    return facts
