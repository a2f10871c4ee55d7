"""What live and published validation share: the prediction to compare, and the relative error.
Errors are fractions: error = (predicted - measured) / measured, ape = |error|."""
from __future__ import annotations

from typing import Any, Callable

from simkit.plan import Plan

PredictFn = Callable[[Plan], Any]


def default_predict(plan: Plan):
    from simkit.model.step import predict

    return predict(plan)


def prediction_dict(pred) -> dict:
    """The parts of a simulator Prediction that validation compares and records."""
    interval = getattr(pred, "step_time_interval_s", None)
    return {"step_time_s": float(pred.step_time_s),
            "step_time_interval_s": [float(x) for x in interval] if interval else None,
            "breakdown_s": {k: float(v) for k, v in pred.breakdown_s.items()},
            "tokens_per_s": _maybe_float(getattr(pred, "tokens_per_s", None)),
            "mfu": _maybe_float(getattr(pred, "mfu", None)),
            "memory_allocated_peak_bytes": _maybe_float(getattr(pred, "memory_allocated_peak_bytes", None)),
            "memory_reserved_peak_bytes": _maybe_float(getattr(pred, "memory_reserved_peak_bytes", None)),
            "memory_breakdown_bytes": {k: float(v) for k, v in (getattr(pred, "memory_breakdown_bytes", None)
                                                                 or {}).items()}}


def memory_error(predicted: dict, measured: dict) -> float | None:
    """(predicted - measured) / measured allocated peak, or None when either is missing."""
    mem = measured.get("memory") or {}
    got, want = mem.get("allocated_peak_bytes"), predicted.get("memory_allocated_peak_bytes")
    return relative_error(want, got) if got and want else None


def _maybe_float(x) -> float | None:
    return None if x is None else float(x)


def relative_error(predicted: float, measured: float) -> float:
    return (predicted - measured) / measured
