"""Fitting the model's free parameters (simkit.model.params) to measured step times. Pure: plans and
measured seconds in, numbers out.

The fit minimizes, over the multipliers p (log p for the rates, the share itself for overlap),
    sum_i rho(log(predicted_i(p) / measured_i)) / SCALE^2  +  sum_j ((theta_j - prior_j) / PRIOR_SIGMA)^2
with rho the soft-L1 loss (scipy.optimize.least_squares' 'soft_l1' at f_scale = SCALE: quadratic for
runs within ~SCALE of the model, linear beyond, so one odd run cannot drag a parameter), and a Gaussian
prior toward the catalogue or calibrated default (every multiplier 1.0). Only the parameters some run is
sensitive to are fitted, never more than there are runs. Multipliers are device-independent mechanisms
(a sustained-GEMM fraction, an attention-kernel efficiency, ...), so runs on several devices share one
set of values.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from simkit.core.errors import SimkitError
from simkit.model.params import BOUNDS, NAMES
from simkit.model.step import Numeric, categorical, numeric, simulate

SCALE = 0.05
"""Robust-loss scale and data weight: runs are taken to scatter ~5 % (log) around the model."""
PRIOR_SIGMA = 0.3
"""Prior width: log(multiplier) ~ Normal(0, 0.3^2), i.e. a default off by more than ~35 % is a one-sigma
surprise; overlap ~ Normal(1, 0.3^2) on the share."""
SENSITIVE = 0.02
"""A parameter is fitted only when some run's log step time moves by at least 0.02 per unit of it
(elasticity for the rates, per unit share for overlap): a 10 % change moving a run by 0.2 %."""
LINEAR = ("overlap",)
"""Parameters fitted as themselves (a share in [0, 1]); the others as log(multiplier)."""
DIFF_STEP = 1e-3
XTOL, FTOL = 1e-3, 1e-4
"""Stop when theta moves by < 0.1 % or the cost by < 0.01 %: far below what the runs can tell apart, and
half the evaluations of scipy's defaults (the fit stays interactive for a few hundred runs)."""


# ----------------------------------------------------------------------------- evaluation
class Evaluator:
    """Predicted step times of many plans under candidate parameter values. Plans that share everything
    categorical (device, precision, kernels, ...) are simulated in one vectorized call, as `simkit sweep`
    does, so one evaluation of ~200 published runs takes a few hundredths of a second."""

    def __init__(self, plans):
        groups: dict[tuple, tuple] = {}
        for i, plan in enumerate(plans):
            c = categorical(plan)
            key = tuple(id(v) if f.name in ("device", "intra_node", "inter_node") else v
                        for f, v in ((f, getattr(c, f.name)) for f in dataclasses.fields(c)))
            groups.setdefault(key, (c, []))[1].append(i)
        self.n = len(plans)
        self.devices = [plan.device for plan in plans]
        self._groups = [(c, np.array(idx), _stack([numeric(plans[i]) for i in idx])) for c, idx in groups.values()]
        self.calls = 0

    def step_times(self, values: dict[str, float]) -> np.ndarray:
        """Step time of every plan with its device's fitted multipliers set to `values` (others 1.0)."""
        self.calls += 1
        out = np.empty(self.n)
        for c, idx, num in self._groups:
            device = dataclasses.replace(c.device, fitted=dict(values))
            out[idx] = simulate(dataclasses.replace(c, device=device), num)["step_time_s"]
        return out


def _stack(items: list[Numeric]) -> Numeric:
    return Numeric(**{f.name: np.array([getattr(n, f.name) for n in items], dtype=float)
                      for f in dataclasses.fields(Numeric)})


# ----------------------------------------------------------------------------- which parameters
def _theta(name: str, value: float) -> float:
    return value if name in LINEAR else float(np.log(value))


def _value(name: str, theta: float) -> float:
    return float(theta) if name in LINEAR else float(np.exp(theta))


def _prior(name: str) -> float:
    return _theta(name, 1.0)


def _bounds(name: str) -> tuple[float, float]:
    lo, hi = BOUNDS[name]
    return (lo, hi) if name in LINEAR else (float(np.log(lo)), float(np.log(hi)))


def sensitivities(ev: Evaluator, base=None) -> dict[str, np.ndarray]:
    """d log(step time) / d theta for every run and parameter at the defaults, one-sided toward slower (a
    rate 5 % lower, overlap 0.1 lower): a slower network exposes communication that a faster one would
    leave hidden, so only that direction shows whether a run depends on it. `base`: the step times at the
    defaults, when already known."""
    base = np.log(ev.step_times({}) if base is None else base)
    out = {}
    for name in NAMES:
        step = -0.1 if name in LINEAR else -0.05
        moved = np.log(ev.step_times({name: _value(name, _prior(name) + step)}))
        out[name] = (moved - base) / step
    return out


def choose(sens: dict[str, np.ndarray], runs: int, names=None) -> tuple[list[str], dict[str, str]]:
    """The parameters to fit: those some run is sensitive to, the most influential first (total |d log t /
    d theta| over the runs), at most one per run. Returns (names, {skipped name: why})."""
    skipped = {}
    pool = list(names) if names else list(NAMES)
    for name in NAMES:
        if name not in pool:
            skipped[name] = "not asked for"
    usable = []
    for name in pool:
        if np.max(np.abs(sens[name]), initial=0.0) < SENSITIVE:
            skipped[name] = _insensitive(name)
        else:
            usable.append(name)
    usable.sort(key=lambda n: (-float(np.sum(np.abs(sens[n]))), NAMES.index(n)))
    for name in usable[runs:]:
        skipped[name] = f"at most one parameter per run ({runs} run{'s' * (runs != 1)})"
    return usable[:runs], skipped


def _insensitive(name: str) -> str:
    why = {"network": "no run's step depends on its communication: nothing crosses devices",
           "overlap": "no run hides communication behind compute",
           "attention": "attention is a negligible part of every run"}
    return why.get(name, f"no run's step time depends on it by {SENSITIVE:g} or more")


# ----------------------------------------------------------------------------- fitting
@dataclass
class Fit:
    """What one fit found. Residuals are log(predicted / measured) per run."""

    names: list[str]
    values: dict[str, float]
    stderr: dict[str, float]
    skipped: dict[str, str]
    before: np.ndarray
    after: np.ndarray
    evaluations: int = 0
    converged: bool = True
    sensitivity: dict[str, float] = field(default_factory=dict)   # mean |d log t / d theta| per fitted name


def fit(ev: Evaluator, measured, names=None, *, weights=None, strict: bool = False) -> Fit:
    """Fit the free parameters to the runs `ev` evaluates (measured step times in seconds).

    `names`: the parameters to consider (default all of params.NAMES); the ones no run is sensitive to
    are skipped and at most len(measured) are fitted. `weights`: per run (normalized to mean 1; e.g. one
    over the runs of its source, so that each source counts once). With `strict`, asking for more
    parameters than there are runs, or for one no run is sensitive to, is an error instead."""
    from scipy.optimize import least_squares

    measured = np.asarray(measured, dtype=float)
    n = len(measured)
    if n == 0:
        raise SimkitError("no runs to fit")
    if strict and names and len(names) > n:
        raise SimkitError(f"{n} run{'s' * (n != 1)} cannot fit {len(names)} parameters ({', '.join(names)}): "
                          f"give at least {len(names)} runs or name at most {n} with --params")
    calls0 = ev.calls
    defaults = ev.step_times({})
    before = np.log(defaults / measured)
    sens = sensitivities(ev, defaults)
    chosen, skipped = choose(sens, n, names)
    if strict and names:
        dull = [x for x in names if x in skipped]
        if dull:
            raise SimkitError(f"cannot fit {dull[0]}: {skipped[dull[0]]}")
    if not chosen:
        return Fit([], {}, {}, skipped, before, before, ev.calls - calls0)
    root_w = np.sqrt(_normalized(weights, n))
    prior = np.array([_prior(x) for x in chosen])
    lo, hi = np.array([[_bounds(x)[0] for x in chosen], [_bounds(x)[1] for x in chosen]])

    def values_of(theta) -> dict[str, float]:
        return {x: _value(x, t) for x, t in zip(chosen, theta)}

    def residuals(theta):
        r = np.log(ev.step_times(values_of(theta)) / measured)
        return np.concatenate([root_w * _robust(r) / SCALE, (theta - prior) / PRIOR_SIGMA])

    x0 = np.clip(prior, lo + 1e-6, hi - 1e-6)
    # dogbox: for a few bounded parameters it needs fewer evaluations than trf (measured on the dev files)
    res = least_squares(residuals, x0, bounds=(lo, hi), method="dogbox", diff_step=DIFF_STEP, xtol=XTOL,
                        ftol=FTOL, max_nfev=60)
    values = values_of(res.x)
    after = np.log(ev.step_times(values) / measured)
    stderr = _stderr(chosen, res.x, res.jac, root_w * _robust(after) / SCALE, n)
    return Fit(chosen, values, stderr, skipped, before, after, ev.calls - calls0, bool(res.status > 0),
               {x: float(np.mean(np.abs(sens[x]))) for x in chosen})


def _robust(r: np.ndarray) -> np.ndarray:
    """Signed square root of the soft-L1 loss at scale SCALE: sum(_robust(r)**2) = sum rho(r); ~r for small r."""
    z = (r / SCALE) ** 2
    return np.sign(r) * SCALE * np.sqrt(2.0 * (np.sqrt(1.0 + z) - 1.0))


def _normalized(weights, n: int) -> np.ndarray:
    if weights is None:
        return np.ones(n)
    w = np.asarray(weights, dtype=float)
    return w * n / w.sum()


def _stderr(names, theta, jac, scaled, n) -> dict[str, float]:
    """Standard errors from the Gauss-Newton covariance (J^T J)^-1 of the weighted residuals, scaled up by
    the runs' scatter beyond SCALE when there are more runs than parameters; delta method to the value."""
    k = len(names)
    try:
        cov = np.linalg.inv(jac.T @ jac)
    except np.linalg.LinAlgError:
        cov = np.linalg.pinv(jac.T @ jac)
    if n > k:
        chi2 = float(np.sum(scaled ** 2)) / (n - k)
        cov = cov * max(1.0, chi2)
    out = {}
    for j, name in enumerate(names):
        sd = float(np.sqrt(max(cov[j, j], 0.0)))
        out[name] = sd if name in LINEAR else _value(name, theta[j]) * sd
    return out


# ----------------------------------------------------------------------------- held-out predictions
def held_out(plans, measured, folds, names=None, progress=None, weights=None) -> tuple[np.ndarray, list[Fit | None]]:
    """log(predicted / measured) of every run predicted by a fit on the runs outside its fold.

    `folds`: lists of run indices (a run in exactly one). A fold with no runs left outside it is
    predicted at the defaults. `progress(i, total)` is called after each fold."""
    measured = np.asarray(measured, dtype=float)
    out = np.full(len(measured), np.nan)
    fits: list[Fit | None] = []
    for i, fold in enumerate(folds):
        fold = np.asarray(fold, dtype=int)
        rest = np.setdiff1d(np.arange(len(measured)), fold)
        values: dict[str, float] = {}
        result = None
        if len(rest):
            result = fit(Evaluator([plans[j] for j in rest]), measured[rest], names,
                         weights=None if weights is None else np.asarray(weights)[rest])
            values = result.values
        out[fold] = np.log(Evaluator([plans[j] for j in fold]).step_times(values) / measured[fold])
        fits.append(result)
        if progress:
            progress(i + 1, len(folds))
    return out, fits


def cv_folds(n: int, max_folds: int = 10) -> tuple[list[np.ndarray], str]:
    """Leave-one-out for up to `max_folds` runs, else `max_folds`-fold (run i in fold i mod k); and its name."""
    if n <= max_folds:
        return [np.array([i]) for i in range(n)], "leave-one-out"
    return [np.arange(f, n, max_folds) for f in range(max_folds)], f"{max_folds}-fold cross-validation"


def few_shot_pick(parameters, step_times, ids, k: int = 3) -> list[int]:
    """The fixed rule for a few-shot fit: with the runs sorted by model size (parameters, then measured step
    time, then id), the smallest, the median and the largest (k = 3; other k: evenly spaced ranks)."""
    order = sorted(range(len(ids)), key=lambda i: (parameters[i], step_times[i], ids[i]))
    if k >= len(order):
        return order
    ranks = sorted({round(j * (len(order) - 1) / (k - 1)) for j in range(k)}) if k > 1 else [(len(order) - 1) // 2]
    return [order[r] for r in ranks]
