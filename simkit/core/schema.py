"""Strict construction of spec dataclasses from YAML mappings.

One mechanism serves plans and hardware profiles: unknown keys are rejected (with the close valid
ones), types are checked, numbers must be finite and, where a field says so, positive or in range.
Every error names the file, line, dotted key, bad value and what is allowed. `build` reports every
problem of a mapping (into `Located.problems`) rather than stopping at the first, and marks what it
could not build with `BROKEN`, so later checks can skip what depends on it instead of adding
errors that only follow from the first.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import typing
from typing import Any, Literal, get_args, get_origin

from simkit.core.errors import SimkitError, close_names, closest
from simkit.core.yamlio import Located

_NoneType = type(None)


class Unusable(Exception):
    """A check used a value that could not be built (BROKEN): the check is abandoned, since any error
    it found would only follow from the problem already reported for that value."""


def _unusable(self, *args, **kwargs):
    raise Unusable


class _Broken:
    """A value that could not be built; its problem is already reported. Comparing it, computing with
    it or reading its attributes raises Unusable, so a check that depends on it stops by itself."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "BROKEN"

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise Unusable

    def __deepcopy__(self, memo):
        return self

    __hash__ = object.__hash__
    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = _unusable
    __bool__ = __int__ = __float__ = __index__ = __len__ = __iter__ = __contains__ = __format__ = _unusable
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _unusable
    __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = __pow__ = __rpow__ = __neg__ = _unusable


BROKEN = _Broken()


def spec(default: Any = dataclasses.MISSING, *, doc: str = "", positive: bool = False,
         minimum: float | None = None, maximum: float | None = None, why: str = "") -> Any:
    """A dataclass field with validation metadata (`why`: the reason for the maximum, for its error)."""
    meta = {"doc": doc, "positive": positive, "minimum": minimum, "maximum": maximum, "why": why}
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
    try:
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            return float(value.replace("_", ""))
    except OverflowError:  # an integer beyond float: as infinite as it looks
        return math.inf if value > 0 else -math.inf
    except ValueError:
        return None
    return None


def _shown(value: Any) -> str:
    """A value as the user wrote it in YAML: true/false rather than Python's True/False, a date as a
    date; long values cut short (the message stays one readable line)."""
    import datetime

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (datetime.date, datetime.datetime)):
        return value.isoformat()
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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


def _bound(x: float) -> str:
    """A limit as a user would write it: 3, 100000, 1e+18."""
    return str(int(x)) if x == int(x) and abs(x) < 1e9 else f"{x:g}"


def _check_range(number: float, meta: dict, loc: Located, path: tuple, shown: str) -> None:
    if meta.get("positive") and number <= 0:
        raise loc.error(path, f"{shown} must be positive (> 0)")
    lo, hi = meta.get("minimum"), meta.get("maximum")
    span = f" (allowed {_bound(lo)}..{_bound(hi)})" if lo is not None and hi is not None else ""
    if lo is not None and number < lo:
        raise loc.error(path, f"{shown} is below the minimum {_bound(lo)}{span}")
    if hi is not None and number > hi:
        why = meta.get("why")
        raise loc.error(path, f"{shown} is above the maximum {_bound(hi)}{span}" + (f" ({why})" if why else ""))


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


def build(cls: type, data: Any, loc: Located, path: tuple = (), *, skip: tuple[str, ...] = (),
          partial: bool = False) -> Any:
    """Construct dataclass `cls` from mapping `data` found at `path` in `loc`, strictly.

    Every problem is reported into `loc.problems`. A field whose value had a problem holds BROKEN;
    the result is BROKEN when `data` is not a mapping or (unless `partial`) any field is BROKEN.
    Nested mappings are built with the same `partial`."""
    at = "" if path else " at the top level"  # below the top, the error's key path already says where
    if data is BROKEN:
        return BROKEN
    if not isinstance(data, dict):
        loc.report(path, f"expected a mapping of keys{at}, got {type(data).__name__} {_shown(data)}")
        return BROKEN
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = _type_hints(cls)
    failed, suggested = False, set()
    for key in data:
        if key not in fields and key not in skip:
            loc.report(path + (key,), f"unknown key; {close_names(str(key), list(fields))}")
            suggested.update(closest(str(key), list(fields), 1))
            failed = True
    kwargs = {}
    for name, f in fields.items():
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore[misc]
                if name not in suggested:  # a misspelt key's error already names it
                    loc.report(path, f"missing required key '{name}'{at} ({_expected(f, hints[name])})")
                kwargs[name] = BROKEN
            continue
        kwargs[name] = _field_value(f, hints[name], data[name], loc, path + (name,), partial)
    failed = failed or any(value is BROKEN for value in kwargs.values())
    if failed and not partial:
        return BROKEN
    return cls(**kwargs)


def _field_value(f: dataclasses.Field, tp: Any, value: Any, loc: Located, path: tuple, partial: bool) -> Any:
    inner, _ = _strip_optional(tp)
    if value is BROKEN:
        return BROKEN
    if dataclasses.is_dataclass(inner):
        return None if value is None and inner is not tp else build(inner, value, loc, path, partial=partial)
    try:
        return convert(value, tp, loc, path, dict(f.metadata))
    except SimkitError as exc:
        loc.problems.add(exc)
        return BROKEN
