"""Reading the `calibration:` section of a calibrated device profile (see docs/DESIGN.md)."""
from __future__ import annotations

import math
from typing import Any

from simkit.hardware import DTYPES, Calibration, CollectiveFit, MatmulPoint
from simkit.yamlio import Located

COLLECTIVES = ("all_reduce", "reduce_scatter", "all_gather")
BANDWIDTH_PATTERNS = ("copy", "triad", "optimizer_step")


def _number(loc: Located, item: dict, path: tuple, key: str, positive: bool = True) -> float:
    value = item.get(key) if isinstance(item, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise loc.error(path + (key,), f"{value!r} is not a finite number")
    if positive and value <= 0:
        raise loc.error(path + (key,), f"{value!r} must be positive (> 0)")
    return float(value)


def _list(loc: Located, value: Any, path: tuple) -> list:
    if not isinstance(value, list):
        raise loc.error(path, f"expected a list of measurements, got {type(value).__name__}")
    return value


def parse_calibration(loc: Located, data: Any, path: tuple) -> Calibration:
    if not isinstance(data, dict):
        raise loc.error(path, "expected a mapping")
    matmul: dict[str, tuple[MatmulPoint, ...]] = {}
    for dtype, points in (data.get("matmul") or {}).items():
        if dtype not in DTYPES:
            raise loc.error(path + ("matmul", dtype), f"unknown dtype; allowed: {', '.join(DTYPES)}")
        where = path + ("matmul", dtype)
        matmul[dtype] = tuple(
            MatmulPoint(int(_number(loc, p, where + (i,), "m")), int(_number(loc, p, where + (i,), "n")),
                        int(_number(loc, p, where + (i,), "k")),
                        _number(loc, p, where + (i,), "flop_per_s_median"),
                        float(p.get("flop_per_s_iqr", 0.0) or 0.0))
            for i, p in enumerate(_list(loc, points, where)))
    bandwidth = {}
    for pattern, points in (data.get("memory_bandwidth") or {}).items():
        where = path + ("memory_bandwidth", pattern)
        bandwidth[pattern] = tuple(sorted(
            (_number(loc, p, where + (i,), "bytes"), _number(loc, p, where + (i,), "bytes_per_s_median"),
             float(p.get("bytes_per_s_iqr", 0.0) or 0.0))
            for i, p in enumerate(_list(loc, points, where))))
    collectives = {}
    coll = data.get("collectives") or {}
    for name in COLLECTIVES:
        if name in coll and coll[name]:
            where = path + ("collectives", name)
            collectives[name] = CollectiveFit(
                latency_s=_number(loc, coll[name], where, "latency_us", positive=False) * 1e-6,
                bus_bandwidth_bytes_per_s=_number(loc, coll[name], where, "bus_bandwidth_gb_per_s") * 1e9,
                backend=str(coll.get("backend", "")), nproc=int(coll.get("nproc", 0) or 0))
    attention = tuple(data.get("attention") or ())
    return Calibration(date=str(data.get("date", "")), environment=dict(data.get("environment") or {}),
                       matmul=matmul, memory_bandwidth=bandwidth, attention=attention,
                       collectives=collectives, raw=data)
