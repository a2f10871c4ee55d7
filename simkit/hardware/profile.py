"""Reading the `calibration:` section of a calibrated device profile (see docs/DESIGN.md).

Malformed sections fail like every other bad input: one line naming the file, line and key, for
every section that has a problem (each section is read on its own; unknown keys are all reported)."""
from __future__ import annotations

import math
from typing import Any

from simkit.core.errors import close_names
from simkit.hardware.types import DTYPES, Calibration, CollectiveFit, MatmulPoint
from simkit.core.yamlio import Located

COLLECTIVES = ("all_reduce", "reduce_scatter", "all_gather")
BANDWIDTH_PATTERNS = ("copy", "triad", "optimizer_step", "first_touch", "cross_entropy", "cross_entropy_fused", "gelu",
                      "layer_norm")
SECTION_KEYS = ("date", "simkit_version", "environment", "settings", "method", "matmul", "memory_bandwidth",
                "attention", "collectives")


def _number(loc: Located, item: Any, path: tuple, key: str, positive: bool = True, default: float | None = None) -> float:
    if not isinstance(item, dict):
        raise loc.error(path, f"{item!r} must be a mapping with '{key}'")
    if key not in item and default is not None:
        return default
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise loc.error(path + (key,), f"{value!r} is not a finite number")
    if positive and value <= 0:
        raise loc.error(path + (key,), f"{value!r} must be positive (> 0)")
    if not positive and value < 0:
        raise loc.error(path + (key,), f"{value!r} must not be negative")
    return float(value)


def _dimension(loc: Located, item: Any, path: tuple, key: str) -> int:
    """A GEMM dimension: a number of at least 1 (a fraction would be read as 0 and its log as -inf)."""
    value = _number(loc, item, path, key)
    if value < 1:
        raise loc.error(path + (key,), f"{value!r} must be at least 1")
    return int(value)


def _mapping(loc: Located, value: Any, path: tuple, allowed: tuple[str, ...] | None = None) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise loc.error(path, f"expected a mapping, got {type(value).__name__}")
    if allowed is not None:
        for key in value:
            if key not in allowed:
                loc.report(path + (key,), f"unknown key; {close_names(str(key), allowed)}")
        return {key: item for key, item in value.items() if key in allowed}
    return value


def _list(loc: Located, value: Any, path: tuple) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise loc.error(path, f"expected a list of measurements, got {type(value).__name__}")
    return value


def _matmul(loc: Located, data: dict, path: tuple) -> dict[str, tuple[MatmulPoint, ...]]:
    out = {}
    for dtype, points in _mapping(loc, data.get("matmul"), path, DTYPES).items():
        where = path + (dtype,)
        out[dtype] = tuple(
            MatmulPoint(_dimension(loc, p, where + (i,), "m"), _dimension(loc, p, where + (i,), "n"),
                        _dimension(loc, p, where + (i,), "k"),
                        _number(loc, p, where + (i,), "flop_per_s_median"),
                        _number(loc, p, where + (i,), "flop_per_s_iqr", positive=False, default=0.0))
            for i, p in enumerate(_list(loc, points, where)))
    return out


def _bandwidth(loc: Located, data: dict, path: tuple) -> dict:
    out = {}
    for pattern, points in _mapping(loc, data.get("memory_bandwidth"), path, BANDWIDTH_PATTERNS).items():
        where = path + (pattern,)
        out[pattern] = tuple(sorted(
            (_number(loc, p, where + (i,), "bytes"), _number(loc, p, where + (i,), "bytes_per_s_median"),
             _number(loc, p, where + (i,), "bytes_per_s_iqr", positive=False, default=0.0))
            for i, p in enumerate(_list(loc, points, where))))
    return out


def _attention(loc: Located, data: dict, path: tuple) -> tuple[dict, ...]:
    rows = _list(loc, data.get("attention"), path)
    for i, row in enumerate(rows):
        for key in ("seq_len", "head_dim", "forward_flop_per_s_median", "backward_flop_per_s_median"):
            _number(loc, row, path + (i,), key)
    return tuple(rows)


def _collectives(loc: Located, data: dict, path: tuple) -> dict[str, CollectiveFit]:
    return _fits(loc, _mapping(loc, data.get("collectives"), path), path)


def _inter_collectives(loc: Located, data: dict, path: tuple) -> dict[str, CollectiveFit]:
    """The `inter_node` part of `collectives`: the same fits, measured over ranks on `nnodes` nodes."""
    coll = _mapping(loc, data.get("collectives"), path)
    inter = coll.get("inter_node")
    if inter is None:
        return {}
    where = path + ("inter_node",)
    inter = _mapping(loc, inter, where)
    nnodes = inter.get("nnodes")
    if isinstance(nnodes, bool) or not isinstance(nnodes, int) or nnodes < 2:
        raise loc.error(where + ("nnodes",), f"{nnodes!r} is not an integer >= 2 (the nodes the ranks spanned)")
    return _fits(loc, {"backend": coll.get("backend", ""), **inter}, where, nnodes=nnodes)


def _fits(loc: Located, coll: dict, path: tuple, nnodes: int = 1) -> dict[str, CollectiveFit]:
    nproc = coll.get("nproc", 0)
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 0:
        raise loc.error(path + ("nproc",), f"{nproc!r} is not a non-negative integer")
    out = {}
    for name in COLLECTIVES:
        if coll.get(name):
            where = path + (name,)
            out[name] = CollectiveFit(latency_s=_number(loc, coll[name], where, "latency_us", positive=False) * 1e-6,
                                      bus_bandwidth_bytes_per_s=_number(loc, coll[name], where,
                                                                        "bus_bandwidth_gb_per_s") * 1e9,
                                      backend=str(coll.get("backend", "")), nproc=nproc,
                                      points=_collective_points(loc, coll[name], where), nnodes=nnodes)
    return out


def _collective_points(loc: Located, item: dict, path: tuple) -> tuple[tuple[float, float], ...]:
    """The measured (bytes, median seconds) of one collective, sorted by size (optional list)."""
    rows = item.get("points") or []
    if not isinstance(rows, list):
        raise loc.error(path + ("points",), f"expected a list of {{bytes, time_s_median}}, got {type(rows).__name__}")
    points = [(_number(loc, row, path + ("points", i), "bytes"), _number(loc, row, path + ("points", i), "time_s_median"))
              for i, row in enumerate(rows)]
    sizes = [size for size, _ in points]
    repeated = sorted({size for size in sizes if sizes.count(size) > 1})
    if repeated:
        raise loc.error(path + ("points",), f"size {repeated[0]:.0f} bytes appears more than once; "
                                            "each size may appear once")
    return tuple(sorted(points))


def _concurrent_matmul(loc: Located, data: dict, path: tuple) -> dict | None:
    coll = _mapping(loc, data.get("collectives"), path)
    item = coll.get("concurrent_matmul")
    if item is None:
        return None
    where = path + ("concurrent_matmul",)
    nproc = coll.get("nproc", 0)
    if isinstance(nproc, bool) or not isinstance(nproc, int) or nproc < 0:
        raise loc.error(path + ("nproc",), f"{nproc!r} is not a non-negative integer")
    return {"m": _dimension(loc, item, where, "m"), "n": _dimension(loc, item, where, "n"),
            "k": _dimension(loc, item, where, "k"), "flop_per_s": _number(loc, item, where, "flop_per_s_median"),
            "nproc": nproc}


def _environment(loc: Located, data: dict, path: tuple) -> dict:
    """What the profile was measured on; the thread and core counts the model reads must be counts."""
    env = _mapping(loc, data.get("environment"), path)
    for key in ("threads", "cpu_count"):
        value = env.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise loc.error(path + (key,), f"{value!r} is not a positive integer")
    return env


def _settings(loc: Located, data: dict, path: tuple) -> None:
    """How calibrate was run; the model reads `device` (cpu or cuda) to know a host CPU."""
    settings = _mapping(loc, data.get("settings"), path)
    if settings.get("device") is not None and not isinstance(settings["device"], str):
        raise loc.error(path + ("device",), f"{settings['device']!r} is not a string (cpu or cuda)")


def parse_calibration(loc: Located, data: Any, path: tuple) -> Calibration:
    """The `calibration:` section; each part is read on its own, so every broken part is reported."""
    data = _mapping(loc, data, path, SECTION_KEYS)
    part = loc.problems.call
    env = part(_environment, loc, data, path + ("environment",), default={})
    part(_settings, loc, data, path + ("settings",))
    coll = path + ("collectives",)
    return Calibration(date=str(data.get("date", "")), environment=dict(env),
                       matmul=part(_matmul, loc, data, path + ("matmul",), default={}),
                       memory_bandwidth=part(_bandwidth, loc, data, path + ("memory_bandwidth",), default={}),
                       attention=part(_attention, loc, data, path + ("attention",), default=()),
                       collectives=part(_collectives, loc, data, coll, default={}), raw=data,
                       collectives_inter=part(_inter_collectives, loc, data, coll, default={}),
                       concurrent_matmul=part(_concurrent_matmul, loc, data, coll))
