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


def optimize(plan, **options):
    """The best layouts of a plan on given hardware -> simkit.search.optimize.OptimizeResult. Options:
    devices or nodes, objective ('time', 'cost', 'time-to-train'), top, fix and allow ('KEY=V1,V2'
    texts), headroom (fraction of device memory left free), overrides ('KEY=VALUE' texts)."""
    from simkit.search.optimize import optimize as _optimize

    return _optimize(plan, **options)


__all__ = ["predict", "optimize", "__version__"]
