"""Cross-validation by source, and the interval it gives. Pure: runs and plans in, plain dicts out.

- `leave_source_out`: for each source (simkit.validate.runs.source_group), fit the free parameters
  (simkit.search.fit) on every other source's runs and predict its runs: the error of a source whose
  measurements chose nothing. Beside it, labelled, the in-sample numbers: the defaults with no fit at all,
  and one fit on every source. Runs with catalogue devices and with calibrated profiles are kept apart
  (the multipliers of a calibrated profile start from measured rates, not datasheet ones).
- `few_shot`: for each source and device (a user's stack on their cluster) with at least 6 runs, fit on 3
  chosen by a fixed rule (search.fit.few_shot_pick) and predict the rest.
- `interval`: the central `coverage` interval of log(measured / predicted) over held-out residuals, each
  source weighted equally (so the interval speaks for a new source, not for the biggest one), and its
  empirical coverage per source: with the quantiles of all sources (in-sample) and with the quantiles of
  the other sources only (held out).

Errors are fractions, (predicted - measured) / measured; residuals are log(predicted / measured).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from simkit.search.fit import Evaluator, cv_folds, few_shot_pick, fit, held_out
from simkit.validate.runs import source_group

MIN_FEW_SHOT_RUNS = 6
FEW_SHOT_FIT = 3
COVERAGE = 0.8


def kind_of(device) -> str:
    """The kind of profile a prediction uses: datasheet numbers or measured ones."""
    return "calibrated" if device.calibration is not None else "catalogue"


def summary(errors) -> dict:
    """MAPE, median and max |error|, mean signed error of fractions (empty: zeros and count 0)."""
    e = np.asarray(errors, dtype=float)
    if not len(e):
        return {"count": 0, "mape": None, "median_ape": None, "max_ape": None, "mean_error": None}
    a = np.abs(e)
    return {"count": int(len(e)), "mape": float(a.mean()), "median_ape": float(np.median(a)),
            "max_ape": float(a.max()), "mean_error": float(e.mean())}


def _error(residual):
    return np.expm1(np.asarray(residual, dtype=float))


# ----------------------------------------------------------------------------- leave one source out
def leave_source_out(runs, plans, progress=None) -> dict:
    """Per kind of profile, per source: held-out, default and in-sample-fit errors. `progress(text)`."""
    measured = np.array([r.measured_step_time_s for r in runs])
    groups = [source_group(r.source) for r in runs]
    kinds = [kind_of(p.device) for p in plans]
    rows = [{"id": r.id, "source": g, "kind": k, "device": p.device.name, "measured_step_time_s": float(m)}
            for r, g, k, p, m in zip(runs, groups, kinds, plans, measured)]
    sources, fitted_all = [], {}
    for kind in sorted(set(kinds)):
        idx = [i for i, k in enumerate(kinds) if k == kind]
        names = sorted({groups[i] for i in idx})
        folds = [[j for j, i in enumerate(idx) if groups[i] == g] for g in names]
        sub_plans, sub_meas = [plans[i] for i in idx], measured[idx]
        step = (lambda i, n, kind=kind: progress(f"{kind}: held out {i}/{n} sources")) if progress else None
        weights = source_weights(np.array([groups[i] for i in idx]))
        loso, fits = held_out(sub_plans, sub_meas, folds, progress=step, weights=weights)
        everything = fit(Evaluator(sub_plans), sub_meas, weights=weights)
        fitted_all[kind] = {"values": everything.values, "stderr": everything.stderr, "skipped": everything.skipped}
        for j, i in enumerate(idx):
            rows[i].update(loso_error=float(_error(loso[j])), default_error=float(_error(everything.before[j])),
                           insample_error=float(_error(everything.after[j])), loso_residual=float(loso[j]))
        for g, fold, f in zip(names, folds, fits):
            sources.append(_source_row(kind, g, [rows[idx[j]] for j in fold], f.values if f else {}))
        sources.append(_source_row(kind, "all", [rows[i] for i in idx], None))
    return {"rows": rows, "sources": sources, "fitted_all": fitted_all}


def _source_row(kind: str, source: str, rows: list[dict], values) -> dict:
    out = {"kind": kind, "source": source, "count": len(rows)}
    for label in ("loso", "default", "insample"):
        s = summary([r[f"{label}_error"] for r in rows])
        out.update({f"{label}_{k}": v for k, v in s.items() if k != "count"})
    worst = max(rows, key=lambda r: abs(r["loso_error"]))
    out["worst"] = {"id": worst["id"], "error": worst["loso_error"]}
    if values is not None:
        out["fitted_on_others"] = values
    return out


# ----------------------------------------------------------------------------- few-shot
def few_shot(runs, plans, k: int = FEW_SHOT_FIT, min_runs: int = MIN_FEW_SHOT_RUNS, progress=None) -> dict:
    """For each (source, device) with at least `min_runs` runs: fit on `k` (the smallest, median and largest
    model), predict the others. Returns {"units": [...], "rows": [...]}: per unit the errors before (defaults)
    and after the fit on the held-out runs; per held-out run its residual."""
    from simkit.model.workload import parameter_count

    units: dict[tuple, list[int]] = {}
    for i, (r, p) in enumerate(zip(runs, plans)):
        units.setdefault((kind_of(p.device), source_group(r.source), p.device.name), []).append(i)
    out_units, out_rows = [], []
    chosen = sorted(u for u, idx in units.items() if len(idx) >= min_runs)
    for n, key in enumerate(chosen, 1):
        idx = units[key]
        size = [float(parameter_count(m.n_layers, m.d_model, m.n_heads, m.n_kv_heads, m.d_ff, m.vocab_size, m.mlp,
                                      m.tied_embeddings)) for m in (plans[i].model for i in idx)]
        meas = [runs[i].measured_step_time_s for i in idx]
        pick = [idx[j] for j in few_shot_pick(size, meas, [runs[i].id for i in idx], k)]
        rest = [i for i in idx if i not in pick]
        f = fit(Evaluator([plans[i] for i in pick]), np.array([runs[i].measured_step_time_s for i in pick]))
        ev = Evaluator([plans[i] for i in rest])
        m_rest = np.array([runs[i].measured_step_time_s for i in rest])
        before, after = np.log(ev.step_times({}) / m_rest), np.log(ev.step_times(f.values) / m_rest)
        kind, source, device = key
        out_units.append({"kind": kind, "source": source, "device": device, "runs": len(idx),
                          "fitted_on": [runs[i].id for i in pick], "values": f.values, "stderr": f.stderr,
                          "predicted": len(rest), "before": summary(_error(before)), "after": summary(_error(after))})
        out_rows += [{"id": runs[i].id, "source": source, "kind": kind, "device": device, "residual": float(a)}
                     for i, a in zip(rest, after)]
        if progress:
            progress(f"few-shot {n}/{len(chosen)}")
    return {"units": out_units, "rows": out_rows}


def fit_held_out(plans, measured, names=None, progress=None) -> tuple[np.ndarray, str]:
    """Held-out residuals of a fit on the runs: leave-one-out for up to 10 runs, else 10-fold."""
    folds, label = cv_folds(len(measured))
    residuals, _ = held_out(plans, measured, folds, names, progress)
    return residuals, label


# ----------------------------------------------------------------------------- interval
def weighted_quantile(values, weights, q: float) -> float:
    """The q-quantile of `values` with `weights` (linear between the weighted midpoints of sorted values)."""
    v, w = np.asarray(values, dtype=float), np.asarray(weights, dtype=float)
    order = np.argsort(v)
    v, w = v[order], w[order]
    cum = (np.cumsum(w) - 0.5 * w) / w.sum()
    return float(np.interp(q, cum, v))


def interval(residuals, groups, coverage: float = COVERAGE) -> dict:
    """The central `coverage` interval of e = log(measured / predicted) = -residual, each source weighted
    equally: {low, high} (multiply the prediction by exp(low), exp(high)), and its empirical coverage per
    source, in-sample and held out (quantiles from the other sources)."""
    e = -np.asarray(residuals, dtype=float)
    groups = np.asarray(groups)
    lo_q, hi_q = (1 - coverage) / 2, (1 + coverage) / 2

    def bounds(mask):
        w = source_weights(groups[mask])
        return weighted_quantile(e[mask], w, lo_q), weighted_quantile(e[mask], w, hi_q)

    everything = np.ones(len(e), dtype=bool)
    low, high = bounds(everything)
    by_source, inside_all, inside_out = [], np.zeros(len(e), bool), np.full(len(e), np.nan)
    for g in sorted(set(groups.tolist())):
        mine = groups == g
        inside_all[mine] = (e[mine] >= low) & (e[mine] <= high)
        others = ~mine
        if others.any():
            lo_o, hi_o = bounds(others)
            inside_out[mine] = (e[mine] >= lo_o) & (e[mine] <= hi_o)
        by_source.append({"source": g, "count": int(mine.sum()), "coverage": float(inside_all[mine].mean()),
                          "coverage_held_out": float(np.mean(inside_out[mine])) if others.any() else None})
    n_sources = len(by_source)
    held = inside_out[~np.isnan(inside_out)]
    return {"coverage": coverage, "low": low, "high": high, "count": int(len(e)), "sources": n_sources,
            "by_source": by_source,
            "overall": {"coverage": float(inside_all.mean()),
                        "coverage_held_out": float(held.mean()) if len(held) else None,
                        "coverage_by_source_mean": float(np.mean([s["coverage"] for s in by_source]))}}


def source_weights(groups) -> np.ndarray:
    """One over the runs of each run's source: every source weighs the same in a fit or a quantile."""
    names, counts = np.unique(groups, return_counts=True)
    per = dict(zip(names.tolist(), counts.tolist()))
    return np.array([1.0 / per[g] for g in groups.tolist()])


def covered(residuals, low: float, high: float) -> float:
    """The share of runs whose log(measured / predicted) lies in [low, high]."""
    e = -np.asarray(residuals, dtype=float)
    return float(np.mean((e >= low) & (e <= high))) if len(e) else float("nan")


def intervals(loso: dict, shots: dict, coverage: float = COVERAGE) -> dict:
    """Per kind of profile, the interval of its held-out residuals: catalogue and calibrated from
    leave-one-source-out, fitted from the runs the few-shot fits held out (all kinds together)."""
    out = {}
    for kind in sorted({r["kind"] for r in loso["rows"]}):
        rows = [r for r in loso["rows"] if r["kind"] == kind]
        res = interval([r["loso_residual"] for r in rows], [r["source"] for r in rows], coverage)
        res["median"] = weighted_quantile([-r["loso_residual"] for r in rows],
                                          source_weights(np.array([r["source"] for r in rows])), 0.5)
        res["shipped_coverage"] = covered([np.log1p(r["default_error"]) for r in rows], res["low"], res["high"])
        res["residuals"] = "leave-one-source-out predictions"
        out[kind] = res
    if shots["rows"]:
        rows = shots["rows"]
        res = interval([r["residual"] for r in rows], [r["source"] for r in rows], coverage)
        res["median"] = weighted_quantile([-r["residual"] for r in rows],
                                          source_weights(np.array([r["source"] for r in rows])), 0.5)
        res["residuals"] = f"runs held out of few-shot fits ({FEW_SHOT_FIT} runs of one source and device)"
        out["fitted"] = res
    return out


def interval_yaml(found: dict, existing: dict, files: list[str], date: str) -> str:
    """simkit/presets/model_error.yaml: the kinds in `found` re-derived, the others kept as they were."""
    import yaml

    cover = next(iter(found.values()))["coverage"] if found else float(existing.get("coverage", COVERAGE))
    doc = {"coverage": cover}
    names = ", ".join(Path(f).name for f in files)
    for kind in ("catalogue", "calibrated", "fitted"):
        if kind in found:
            f = found[kind]
            doc[kind] = {"low": round(f["low"], 4), "median": round(f["median"], 4), "high": round(f["high"], 4),
                         "runs": f["count"], "sources": f["sources"],
                         "source": f"simkit validate --cv source on {names}, {date}: {f['residuals']}, "
                                   f"{f['count']} runs from {f['sources']} source{'s' * (f['sources'] != 1)}, each "
                                   "source weighted equally; "
                                   f"empirical coverage {f['overall']['coverage']:.0%} of the runs"
                                   + _held_note(f['overall']['coverage_held_out'])}
        elif kind in existing:
            doc[kind] = existing[kind]
    head = ("# Known error of simkit's step-time model by kind of profile: the central `coverage` quantiles of\n"
            "# log(measured / predicted) over held-out runs. `simkit predict` turns them into its interval\n"
            "# (simkit/model/uncertainty.py). Written by `simkit validate --published FILES --cv source\n"
            "# --write-interval FILE`; kinds the given runs did not cover are kept as they were.\n")
    return head + yaml.safe_dump(doc, sort_keys=False, width=110, allow_unicode=True)


def _held_note(held) -> str:
    return "" if held is None else f" ({held:.0%} with each source's quantiles taken from the other sources)"
