"""The hardware types: a device (catalogue entry or calibrated profile), an interconnect, a system, and
what `simkit calibrate` measured. SI units inside; `catalogue.py` and `profile.py` convert at load."""
from __future__ import annotations

from dataclasses import dataclass, field

KINDS = ("device", "interconnect", "system")
DTYPES = ("fp32", "tf32", "fp16", "bf16", "fp8")
GIB = 2**30
GB = 1e9
TFLOP = 1e12


@dataclass(frozen=True)
class MatmulPoint:
    m: int
    n: int
    k: int
    flop_per_s: float
    flop_per_s_iqr: float = 0.0


@dataclass(frozen=True)
class CollectiveFit:
    """Alpha-beta fit of one measured collective (nccl-tests conventions)."""

    latency_s: float
    bus_bandwidth_bytes_per_s: float
    backend: str = ""
    nproc: int = 0
    points: tuple[tuple[float, float], ...] = ()
    """Measured (bytes, seconds) medians at `nproc` ranks, smallest first; between them the measured
    times are used instead of the fit (which can miss single sizes by 25% and more)."""
    nnodes: int = 1
    """Nodes the measured ranks spanned: 1 for the intra-node section, > 1 for `inter_node`."""


@dataclass(frozen=True, eq=False)
class Calibration:
    """What `simkit calibrate` measured; absent for catalogue entries."""

    date: str
    environment: dict
    matmul: dict[str, tuple[MatmulPoint, ...]]
    memory_bandwidth: dict[str, tuple[tuple[float, float, float], ...]]  # pattern -> (bytes, B/s, iqr)
    attention: tuple[dict, ...]
    collectives: dict[str, CollectiveFit]
    raw: dict = field(repr=False, default_factory=dict)
    collectives_inter: dict[str, CollectiveFit] = field(default_factory=dict)
    """Measured over ranks on several nodes (`calibrate --comm --nnodes M`): used for groups that span nodes."""
    concurrent_matmul: dict | None = None   # {m, n, k, flop_per_s, nproc}: one worker's GEMM rate under N-way load


@dataclass(frozen=True, eq=False)   # hashed by identity: profiles are cached per file
class Device:
    name: str
    description: str
    memory_bytes: float
    memory_bandwidth_bytes_per_s: float
    peak_flop_per_s: dict[str, float]
    matmul_efficiency: dict[str, float]            # dtype or 'default' -> fraction of peak
    memory_bandwidth_efficiency: float | None = None
    price_per_hour_usd: float | None = None
    calibration: Calibration | None = None
    sources: dict[str, str] = field(default_factory=dict, repr=False)
    path: str = ""
    fitted: dict[str, float] = field(default_factory=dict)
    """Multipliers `simkit fit` estimated from measured runs (simkit.model.params); empty otherwise."""
    architecture: str | None = None
    """GPU generation (ampere, hopper, ...; simkit.model.attention.ARCHITECTURES): the default attention kernel."""
    native_link: str | None = None
    """The interconnect a node of these devices has unless a plan names one (catalogue name)."""

    def peak(self, dtype: str) -> float | None:
        return self.peak_flop_per_s.get(dtype)

    def efficiency(self, dtype: str) -> float:
        return self.matmul_efficiency.get(dtype, self.matmul_efficiency.get("default", 1.0))


@dataclass(frozen=True)
class Interconnect:
    name: str
    description: str
    bandwidth_bytes_per_s: float   # per direction, per device (or per NIC)
    latency_s: float             # per hop (one ring step), see model/comm/collectives.py
    efficiency: float | None = None
    sharp_efficiency: float | None = None   # NVLink SHARP all-reduce algbw / bandwidth, where the switch reduces
    sources: dict[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class System:
    name: str
    description: str
    source: str
    device: str
    devices_per_node: int
    intra_node: str | None
    inter_node: str | None
    inter_node_links: int
