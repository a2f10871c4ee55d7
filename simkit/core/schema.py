"""Strict construction of spec dataclasses from YAML mappings.

One mechanism serves plans and hardware profiles: unknown keys are rejected (with the close valid
ones), types are checked, numbers must be finite and, where a field says so, positive or in range.
Every error names the file, line, dotted key, bad value and what is allowed.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import typing
from typing import Any, Literal, get_args, get_origin

from simkit.core.errors import close_names
from simkit.core.yamlio import Located

_NoneType = type(None)


def spec(default: Any = dataclasses.MISSING, *, doc: str = "", positive: bool = False,
         minimum: float | None = None, maximum: float | None = None) -> Any:
    """A dataclass field with validation metadata."""
    meta = {"doc": doc, "positive": positive, "minimum": minimum, "maximum": maximum}
    return dataclasses.field(default=default, metadata=meta)


def _type_name(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return " | ".join(str(a).lower() if isinstance(a, bool) else str(a) for a in get_args(tp))
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    if get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in get_args(tp) if a is not _NoneType]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _as_float(value: Any) -> float | None:
    """Numbers, and number-like strings such as '1e12' (YAML 1.1 reads those as strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.replace("_", ""))
        except ValueError:
            return None
    return None


def _shown(value: Any) -> str:
    """A value as the user wrote it in YAML: true/false rather than Python's True/False."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


def convert(value: Any, tp: Any, loc: Located, path: tuple, meta: dict | None = None) -> Any:
    """Check and convert one scalar value against a field type."""
    meta = meta or {}
    tp, optional = _strip_optional(tp)
    if value is None:
        if optional:
            return None
        raise loc.error(path, f"a value is required here, expected {_type_name(tp)}")
    shown = _shown(value)
    if get_origin(tp) is Literal:
        allowed = get_args(tp)
        if value in allowed and type(value) is type(allowed[0]):
            return value
        raise loc.error(path, f"{shown} is not allowed; allowed: {_type_name(tp)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise loc.error(path, f"{shown} is not true or false")
    if tp is str:
        if isinstance(value, str) and value.strip():
            return value
        raise loc.error(path, f"{shown} is not a non-empty string")
    if tp in (int, float):
        number = _as_float(value)
        if number is None:
            raise loc.error(path, f"{shown} is not {_type_name(tp)}")
        if not math.isfinite(number):
            raise loc.error(path, f"{shown} is not a finite number")
        if tp is int:
            if number != int(number):
                raise loc.error(path, f"{shown} is not an integer")
            number = int(number)
        _check_range(number, meta, loc, path, shown)
        return number
    raise TypeError(f"unsupported field type {tp!r}")  # a bug in simkit, not user input


def _check_range(number: float, meta: dict, loc: Located, path: tuple, shown: str) -> None:
    if meta.get("positive") and number <= 0:
        raise loc.error(path, f"{shown} must be positive (> 0)")
    lo, hi = meta.get("minimum"), meta.get("maximum")
    if lo is not None and number < lo:
        raise loc.error(path, f"{shown} is below the minimum {lo:g}" + (f" (allowed {lo:g}..{hi:g})" if hi is not None else ""))
    if hi is not None and number > hi:
        raise loc.error(path, f"{shown} is above the maximum {hi:g}" + (f" (allowed {lo:g}..{hi:g})" if lo is not None else ""))


def _expected(f: dataclasses.Field, tp: Any) -> str:
    """'an integer: vocabulary size' -- what a missing field wants, for the error text."""
    inner, _ = _strip_optional(tp)
    kind = "a mapping" if dataclasses.is_dataclass(inner) else _type_name(inner)
    doc = f.metadata.get("doc")
    return f"{kind}: {doc}" if doc else kind


@functools.lru_cache(maxsize=None)
def _type_hints(cls: type) -> dict:
    """typing.get_type_hints, once per class: a sweep or a search loads a plan per group of rows."""
    return typing.get_type_hints(cls)


def build(cls: type, data: Any, loc: Located, path: tuple = (), *, skip: tuple[str, ...] = ()) -> Any:
    """Construct dataclass `cls` from mapping `data` found at `path` in `loc`, strictly."""
    at = "" if path else " at the top level"  # below the top, the error's key path already says where
    if not isinstance(data, dict):
        raise loc.error(path, f"expected a mapping of keys{at}, got {type(data).__name__} {_shown(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = _type_hints(cls)
    for key in data:
        if key not in fields and key not in skip:
            raise loc.error(path + (key,), f"unknown key; {close_names(str(key), list(fields))}")
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
                raise loc.error(path, f"missing required key '{name}'{at} ({_expected(f, hints[name])})")
            continue
        tp = hints[name]
        inner, _ = _strip_optional(tp)
        if dataclasses.is_dataclass(inner):
            kwargs[name] = None if data[name] is None and inner is not tp else build(inner, data[name], loc, path + (name,))
        else:
            kwargs[name] = convert(data[name], tp, loc, path + (name,), dict(f.metadata))
    return cls(**kwargs)
