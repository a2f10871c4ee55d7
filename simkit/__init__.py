"""simkit: predict how long deep-learning training takes on given hardware, and measure it.

Importing simkit is cheap: nothing runs at import and torch is imported only by the parts that
measure (calibrate, validate).
"""
from __future__ import annotations

__version__ = "0.1.0"


def predict(plan, overrides=()):
    """Predict one training plan (a path, a mapping or a loaded Plan) -> simkit.model.step.Prediction."""
    from simkit.plan import load_plan
    from simkit.model.step import predict as _predict

    return _predict(load_plan(plan, overrides))


__all__ = ["predict", "__version__"]
