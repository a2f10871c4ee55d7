"""The low/high interval of a predicted step time.

Two sources, combined in quadrature:
- the model's known error: the mean absolute percentage error measured by `simkit validate` for the
  kind of profile used (catalogue datasheet numbers vs a calibrated profile), recorded with its
  provenance in simkit/presets/model_error.yaml;
- the calibration's spread: half the relative IQR of the measured matmul throughputs.
Communication adds one-sided risk: the overlap assumed for hidden communication may not happen, so
the high end adds a quarter of the hidden communication time.
"""
from __future__ import annotations

import functools
import math
from pathlib import Path

from simkit.core.yamlio import read_yaml


@functools.lru_cache(maxsize=1)
def known_errors() -> dict:
    return read_yaml(Path(__file__).resolve().parents[1] / "presets" / "model_error.yaml").data


def calibration_spread(device) -> float:
    cal = device.calibration
    if cal is None or not cal.matmul:
        return 0.0
    rel = sorted(p.flop_per_s_iqr / p.flop_per_s for pts in cal.matmul.values() for p in pts if p.flop_per_s > 0)
    return 0.5 * rel[len(rel) // 2] if rel else 0.0


def relative_error(device) -> float:
    """The relative half-width of a step-time interval on `device`: the model's known error and the
    calibration's spread in quadrature (`simkit optimize` calls predictions closer than this a tie)."""
    kind = "calibrated" if device.calibration is not None else "catalogue"
    return math.hypot(float(known_errors()[kind]["mape"]), calibration_spread(device))


def step_interval(plan, step_s: float, breakdown: dict) -> tuple[float, float]:
    rel = relative_error(plan.device)
    hidden = max(0.0, breakdown["communication_total"] - breakdown["communication_exposed"])
    return step_s * (1 - rel), step_s * (1 + rel) + 0.25 * hidden
