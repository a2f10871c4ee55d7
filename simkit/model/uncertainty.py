"""The interval of a predicted step time, and the share of real runs it is meant to hold.

simkit/presets/model_error.yaml (written by `simkit validate --published FILES --cv source
--write-interval FILE`, see simkit/validate/crossval.py) gives, per kind of profile, the central
`coverage` quantiles (low, median, high) of log(measured / predicted) over held-out runs:
- catalogue: leave-one-source-out residuals of the published runs (each source weighted equally);
- calibrated: residuals of live runs on calibrated profiles (validate --record);
- fitted: runs held out of few-shot fits (a profile overlay written by `simkit fit`).
The calibration's spread widens both sides in quadrature: half the relative IQR of the measured matmul
throughputs is 0.674 sigma of a normal spread, so a side grows to hypot(side, z sigma) with z the
normal quantile of the coverage. An entry with only a `mape` (an older file) is read as normal errors:
MAPE = sigma sqrt(2 / pi), symmetric about the prediction.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path
from statistics import NormalDist

from simkit.core.yamlio import read_yaml

PRESET = Path(__file__).resolve().parents[1] / "presets" / "model_error.yaml"
IQR_PER_SIGMA = 2 * 0.6745    # the IQR of a normal distribution in sigmas


@functools.lru_cache(maxsize=1)
def known_errors() -> dict:
    return read_yaml(PRESET).data


def coverage() -> float:
    """The share of real runs the interval is meant to hold (e.g. 0.8)."""
    return float(known_errors().get("coverage", 0.8))


def profile_kind(device) -> str:
    """fitted (a `simkit fit` overlay), calibrated or catalogue; a kind the file lacks falls back."""
    errors = known_errors()
    base = "calibrated" if device.calibration is not None else "catalogue"
    return "fitted" if (getattr(device, "fitted", None) and "fitted" in errors) else base


def calibration_spread(device) -> float:
    """Half the median relative IQR of the measured matmul throughputs (0 without a calibration)."""
    cal = device.calibration
    if cal is None or not cal.matmul:
        return 0.0
    rel = sorted(p.flop_per_s_iqr / p.flop_per_s for pts in cal.matmul.values() for p in pts if p.flop_per_s > 0)
    return 0.5 * rel[len(rel) // 2] if rel else 0.0


def log_bounds(entry: dict, cover: float) -> tuple[float, float, float]:
    """(low, median, high) of log(measured / predicted) for one kind's entry."""
    if "low" in entry:
        return float(entry["low"]), float(entry.get("median", 0.0)), float(entry["high"])
    z = NormalDist().inv_cdf((1 + cover) / 2)
    half = z * float(entry["mape"]) / math.sqrt(2 / math.pi)
    return -half, 0.0, half


def _log_interval(device) -> tuple[float, float]:
    """(lower, upper) log bounds of measured / predicted with the stated coverage on `device`."""
    cover = coverage()
    low, mid, high = log_bounds(known_errors()[profile_kind(device)], cover)
    z = NormalDist().inv_cdf((1 + cover) / 2)
    spread = z * 2 * calibration_spread(device) / IQR_PER_SIGMA
    return mid - math.hypot(mid - low, spread), mid + math.hypot(high - mid, spread)


def step_interval(plan, step_s: float, breakdown: dict | None = None) -> tuple[float, float]:
    """(low, high) seconds holding the measured step time with the stated coverage."""
    low, high = _log_interval(plan.device)
    return step_s * math.exp(low), step_s * math.exp(high)


def relative_error(device) -> float:
    """The relative half-width of the stated-coverage interval on `device` (the mean of its lower and upper
    halves): `simkit optimize` calls predictions closer than this a tie."""
    low, high = _log_interval(device)
    return (math.expm1(high) - math.expm1(low)) / 2
