"""The hardware catalogue: devices, interconnects and systems, loaded from the YAML files in `hardware/`
(or from a calibrated profile file) and converted once to SI units."""
from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

from simkit.core.errors import SimkitError, close_names, closest
from simkit.core.yamlio import Located, read_yaml
from simkit.hardware.profile import parse_calibration
from simkit.hardware.types import DTYPES, GB, GIB, KINDS, TFLOP, Device, Interconnect, System


# ----------------------------------------------------------------------------- catalogue files
@functools.lru_cache(maxsize=1)      # a sweep or a search loads a plan per group of rows
def catalogue_dir() -> Path:
    """The shipped catalogue: package data `simkit.catalogue` when installed (a namespace package,
    so its folder comes from the import spec), `hardware/` in a source checkout."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("simkit.catalogue")
    except ModuleNotFoundError:
        spec = None
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / "devices").is_dir():
            return Path(location)
    return Path(__file__).resolve().parents[2] / "hardware"


def _folder(kind: str) -> str:
    return {"device": "devices", "interconnect": "interconnects", "system": "systems"}[kind]


@functools.lru_cache(maxsize=None)
def catalogue_names(kind: str) -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in (catalogue_dir() / _folder(kind)).glob("*.yaml")))


def _catalogue_path(kind: str, name: str, loc: Located | None = None, path: tuple = ()) -> Path:
    names = catalogue_names(kind)
    if name not in names:
        msg = f"unknown {kind} {name!r}; {close_names(name, names)}"
        if loc is not None:
            raise loc.error(path, msg)
        raise SimkitError(msg, key=kind)
    return catalogue_dir() / _folder(kind) / f"{name}.yaml"


def looks_like_path(name: str) -> bool:
    return "/" in name or name.endswith((".yaml", ".yml"))


# ----------------------------------------------------------------------------- parsing helpers
def _fact(loc: Located, data: dict, path: tuple, key: str, *, required: bool = True,
          positive: bool = True, maximum: float | None = None) -> tuple[float | None, str]:
    """Read a `{value: N, source: "..."}` fact; returns (value, source)."""
    where = path + (key,)
    if key not in data:
        if required:
            raise loc.error(path, f"missing required key '{key}' (a mapping {{value: N, source: \"...\"}})")
        return None, ""
    item = data[key]
    if not isinstance(item, dict):
        raise loc.error(where, f"{item!r} must be a mapping {{value: N, source: \"...\"}}")
    for extra in item:
        if extra not in ("value", "source", "dense"):
            raise loc.error(where + (extra,), "unknown key; allowed: value, source, dense")
    if "source" not in item or not isinstance(item["source"], str) or not item["source"].strip():
        raise loc.error(where, "every value needs a non-empty 'source' (document or measurement)")
    value = item.get("value")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise loc.error(where + ("value",), f"{value!r} is not a number")
    if not math.isfinite(value):
        raise loc.error(where + ("value",), f"{value!r} is not a finite number")
    if positive and value <= 0:
        raise loc.error(where + ("value",), f"{value!r} must be positive (> 0)")
    if maximum is not None and value > maximum:
        raise loc.error(where + ("value",), f"{value!r} is above the maximum {maximum:g}")
    if "dense" in item and not isinstance(item["dense"], bool):
        raise loc.error(where + ("dense",), f"{item['dense']!r} is not true or false")
    if item.get("dense") is False:  # a sparse peak read as dense would double every compute estimate
        raise loc.error(where + ("dense",), "sparse peaks are not accepted; give the dense figure "
                        "(half the 2:4-sparsity number) with dense: true")
    return float(value), item["source"]


def _check_keys(loc: Located, data: Any, path: tuple, allowed: tuple[str, ...], required: tuple[str, ...]) -> bool:
    """Report every unknown and missing key of the mapping at `path`; whether there was none."""
    if not isinstance(data, dict):
        loc.report(path, f"expected a mapping, got {type(data).__name__}")
        return False
    before, suggested = len(loc.problems), set()
    for key in data:
        if key not in allowed:
            loc.report(path + (key,), f"unknown key; {close_names(str(key), allowed)}")
            suggested.update(closest(str(key), allowed, 1))
    for key in required:
        if key not in data and key not in suggested:  # a misspelt key's error already names it
            at = "" if path else " at the top level"  # below the top, the error's key path says where
            loc.report(path, f"missing required key '{key}'{at}")
    return loc.problems.ok_since(before)


def _str(loc: Located, data: dict, path: tuple, key: str, default: str | None = None) -> str | None:
    value = data.get(key, default)
    if value is not None and not isinstance(value, str):
        raise loc.error(path + (key,), f"{value!r} is not a string")
    return value


def _check_kind(loc: Located, data: dict, kind: str) -> None:
    got = data.get("kind")
    if got != kind:
        raise loc.error(("kind",), f"{got!r} is not allowed here; expected kind: {kind}")


# ----------------------------------------------------------------------------- devices
_DEVICE_KEYS = ("name", "kind", "description", "architecture", "memory_gib", "memory_bandwidth_gb_per_s",
                "peak_tflops", "fitted", "matmul_efficiency", "memory_bandwidth_efficiency", "price_per_hour_usd",
                "native_link", "calibration")
_DEVICE_REQUIRED = ("name", "kind", "memory_gib", "memory_bandwidth_gb_per_s", "peak_tflops")


def _native_link(loc: Located, data: dict) -> tuple[str | None, str]:
    """`native_link: {value: nvlink3, source: "..."}`: the link a node of these devices has unless the
    plan says otherwise (an SXM board's NVLink, a PCIe card's slot); a catalogue interconnect name."""
    if "native_link" not in data:
        return None, ""
    item, where = data["native_link"], ("native_link",)
    if not isinstance(item, dict) or set(item) - {"value", "source"}:
        raise loc.error(where, f"{item!r} must be a mapping {{value: INTERCONNECT, source: \"...\"}}")
    if not isinstance(item.get("source"), str) or not item["source"].strip():
        raise loc.error(where, "every value needs a non-empty 'source' (document or measurement)")
    name = item.get("value")
    names = catalogue_names("interconnect")
    if not isinstance(name, str) or name not in names:
        raise loc.error(where + ("value",), f"unknown interconnect {name!r}; {close_names(str(name), names)}")
    return name, item["source"]


def parse_device(loc: Located) -> Device:
    """A device from a catalogue file or a calibrated profile; every problem of the file at once."""
    data, problems = loc.data, loc.problems
    if not isinstance(data, dict):
        raise loc.error((), f"expected a mapping, got {type(data).__name__}")
    _check_keys(loc, data, (), _DEVICE_KEYS, _DEVICE_REQUIRED)
    problems.call(_check_kind, loc, data, "device")
    sources: dict[str, str] = {}

    def fact(table: dict, path: tuple, key: str, **kw) -> float | None:
        where = ".".join(path + (key,))
        if key not in table:  # a missing required key is reported by _check_keys
            return None
        value, sources[where] = problems.call(_fact, loc, table, path, key, default=(None, ""), **kw)
        return value

    mem = fact(data, (), "memory_gib")
    bw = fact(data, (), "memory_bandwidth_gb_per_s")
    peak = {}
    peaks = data.get("peak_tflops")
    if "peak_tflops" in data and _check_keys(loc, peaks, ("peak_tflops",), DTYPES, ()):
        if not peaks:
            loc.report(("peak_tflops",), f"needs at least one dtype; allowed: {', '.join(DTYPES)}")
        for dtype in peaks:
            value = fact(peaks, ("peak_tflops",), dtype)
            peak[dtype] = None if value is None else value * TFLOP
    eff = {"default": 1.0}
    table = data.get("matmul_efficiency")
    if "matmul_efficiency" in data and _check_keys(loc, table, ("matmul_efficiency",), ("default",) + DTYPES, ()):
        for key in table:
            eff[key] = fact(table, ("matmul_efficiency",), key, maximum=1.0)
    bw_eff = fact(data, (), "memory_bandwidth_efficiency", maximum=1.0)
    price = fact(data, (), "price_per_hour_usd")
    link, sources["native_link"] = problems.call(_native_link, loc, data, default=(None, ""))
    fitted = problems.call(_fitted, loc, data, sources, default={})
    architecture = problems.call(_architecture, loc, data, default=None)
    calibration = None
    if data.get("calibration") is not None:
        calibration = problems.call(parse_calibration, loc, data["calibration"], ("calibration",))
    name = problems.call(_str, loc, data, (), "name")
    description = problems.call(_str, loc, data, (), "description", "")
    problems.raise_if_any()
    return Device(
        name=name, description=description or "",
        memory_bytes=mem * GIB, memory_bandwidth_bytes_per_s=bw * GB, peak_flop_per_s=peak,
        matmul_efficiency=eff, memory_bandwidth_efficiency=bw_eff, price_per_hour_usd=price,
        calibration=calibration, sources={k: v for k, v in sources.items() if v}, path=loc.file or "",
        native_link=link, fitted=fitted, architecture=architecture)


def _architecture(loc: Located, data: dict) -> str | None:
    from simkit.model.attention import ARCHITECTURES

    value = data.get("architecture")
    if value is not None and value not in ARCHITECTURES:
        raise loc.error(("architecture",), f"{value!r} is not allowed; allowed: {' | '.join(ARCHITECTURES)}")
    return value


def _fitted(loc: Located, data: dict, sources: dict) -> dict[str, float]:
    """The `fitted:` section of a profile overlay written by `simkit fit`: {name: {value, source, ...}}; the
    extra keys a fit writes for people (stderr, runs) are kept in the file and ignored here."""
    from simkit.model.params import BOUNDS, NAMES

    table = data.get("fitted")
    if table is None:
        return {}
    if not isinstance(table, dict):
        raise loc.error(("fitted",), f"expected a mapping of {', '.join(NAMES)}")
    out = {}
    for key, item in table.items():
        if key not in NAMES:
            raise loc.error(("fitted", key), f"unknown key; {close_names(str(key), NAMES)}")
        facts = {key: {k: v for k, v in item.items() if k in ("value", "source")} if isinstance(item, dict) else item}
        lo, hi = BOUNDS[key]
        value, sources[f"fitted.{key}"] = _fact(loc, facts, ("fitted",), key, positive=lo > 0, maximum=hi)
        out[key] = value
    return out


@functools.lru_cache(maxsize=64)
def _load_device_file(path: str, stamp: tuple = ()) -> Device:
    """`stamp` (mtime, size) keys the cache, so a profile rewritten by `simkit calibrate` is read again."""
    return parse_device(read_yaml(path))


def _stamp(path: Path) -> tuple:
    try:
        st = path.stat()
    except OSError:
        return ()
    return (st.st_mtime_ns, st.st_size)


def load_device(name_or_path: str, loc: Located | None = None, path: tuple = ()) -> Device:
    """A catalogue device by name, or a (calibrated) profile by path."""
    if looks_like_path(name_or_path):
        p = Path(name_or_path)
        if loc is not None and loc.file and not p.is_absolute() and not p.exists():
            sibling = Path(loc.file).parent / p
            if sibling.exists():
                p = sibling
        if not p.exists():
            msg = f"profile file {name_or_path!r} not found"
            if loc is not None:
                raise loc.error(path, msg)
            raise SimkitError(msg)
        return _load_device_file(str(p), _stamp(p))
    return _load_device_file(str(_catalogue_path("device", name_or_path, loc, path)))


# ----------------------------------------------------------------------------- interconnects
@functools.lru_cache(maxsize=64)
def _load_interconnect_file(path: str) -> Interconnect:
    loc = read_yaml(path)
    data = loc.data
    _check_keys(loc, data, (), ("name", "kind", "description", "bandwidth_gb_per_s", "latency_us", "efficiency",
                                "sharp_efficiency"),
                ("name", "kind", "bandwidth_gb_per_s", "latency_us"))
    loc.problems.raise_if_any()
    _check_kind(loc, data, "interconnect")
    sources: dict[str, str] = {}
    bw, sources["bandwidth_gb_per_s"] = _fact(loc, data, (), "bandwidth_gb_per_s")
    lat, sources["latency_us"] = _fact(loc, data, (), "latency_us")
    eff, sources["efficiency"] = _fact(loc, data, (), "efficiency", required=False, maximum=1.5)
    sharp, sources["sharp_efficiency"] = _fact(loc, data, (), "sharp_efficiency", required=False, maximum=1.5)
    return Interconnect(name=_str(loc, data, (), "name"), description=_str(loc, data, (), "description", "") or "",
                        bandwidth_bytes_per_s=bw * GB, latency_s=lat * 1e-6, efficiency=eff, sharp_efficiency=sharp,
                        sources={k: v for k, v in sources.items() if v})


def load_interconnect(name: str, loc: Located | None = None, path: tuple = ()) -> Interconnect:
    return _load_interconnect_file(str(_catalogue_path("interconnect", name, loc, path)))


# ----------------------------------------------------------------------------- systems
@functools.lru_cache(maxsize=64)
def _load_system_file(path: str) -> System:
    loc = read_yaml(path)
    data = loc.data
    keys = ("name", "kind", "description", "source", "device", "devices_per_node", "intra_node", "inter_node",
            "inter_node_links")
    _check_keys(loc, data, (), keys, ("name", "kind", "source", "device", "devices_per_node"))
    loc.problems.raise_if_any()
    _check_kind(loc, data, "system")
    for key in ("devices_per_node", "inter_node_links"):
        value = data.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise loc.error((key,), f"{value!r} must be a positive integer")
    return System(name=_str(loc, data, (), "name"), description=_str(loc, data, (), "description", "") or "",
                  source=_str(loc, data, (), "source"), device=_str(loc, data, (), "device"),
                  devices_per_node=data["devices_per_node"], intra_node=_str(loc, data, (), "intra_node"),
                  inter_node=_str(loc, data, (), "inter_node"), inter_node_links=data.get("inter_node_links", 1))


def load_system(name: str, loc: Located | None = None, path: tuple = ()) -> System:
    return _load_system_file(str(_catalogue_path("system", name, loc, path)))


def load_entry(kind: str, name: str) -> Any:
    return {"device": load_device, "interconnect": load_interconnect, "system": load_system}[kind](name)


def list_catalogue(kind: str | None = None) -> list[tuple[str, str]]:
    """(kind, name) for every catalogue entry, optionally of one kind."""
    kinds = (kind,) if kind else KINDS
    return [(k, n) for k in kinds for n in catalogue_names(k)]
