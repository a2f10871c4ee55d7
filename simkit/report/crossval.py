"""Text of `simkit validate --published FILES --cv source` (simkit/validate/crossval.py): the held-out table
with the in-sample numbers beside it, the few-shot table and the interval's coverage by source."""
from __future__ import annotations

import math

from simkit.report import tables

_pct = lambda x: tables.percent(x, signed=False)  # noqa: E731


_LOSO = [("source", "source", tables.plain), ("count", "runs", str), ("loso_mape", "MAPE", _pct),
         ("loso_median_ape", "median", _pct), ("loso_max_ape", "max", _pct),
         ("loso_mean_error", "mean error", tables.percent), ("default_mape", "in-sample: defaults", _pct),
         ("default_max_ape", "defaults max", _pct), ("insample_mape", "in-sample: fit on all", _pct)]
_FEW_SHOT = [("source", "source", tables.plain), ("device", "device", tables.plain), ("runs", "runs", str),
             ("predicted", "predicted", str), ("values", "fitted", tables.plain), ("before", "MAPE before", _pct),
             ("after", "MAPE after", _pct), ("max", "max after", _pct)]
_COVERAGE = [("source", "source", tables.plain), ("count", "runs", str), ("coverage", "coverage", _pct),
             ("coverage_held_out", "held out", _pct)]


def crossval_text(names: str, count: int, loso: dict, shots: dict, found: dict, written: str | None) -> str:
    lines = [f"{names}: {count} runs"]
    for kind in sorted({s["kind"] for s in loso["sources"]}):
        lines += _loso_lines(kind, loso)
    lines += _few_shot_lines(shots["units"])
    for kind, f in found.items():
        lines += _interval_lines(kind, f)
    if written:
        lines += ["", f"wrote {written}"]
    return "\n".join(lines)


def _loso_lines(kind: str, loso: dict) -> list[str]:
    rows = [s for s in loso["sources"] if s["kind"] == kind]
    fit_all = loso["fitted_all"][kind]["values"]
    return ["", f"Leave one source out, {kind} profiles: each source predicted with the free parameters fitted on "
                "the other sources only", tables.table(rows, _LOSO),
            "  (defaults: no fit, every multiplier 1.0, as `simkit predict` ships; the model's constants were chosen "
            "with these runs in view, so that column is in-sample too)",
            f"  fit on all {kind} sources: " + (", ".join(f"{k} {v:.3f}" for k, v in fit_all.items()) or "-")]


def _few_shot_lines(units: list[dict]) -> list[str]:
    if not units:
        return []
    rows = [{"source": u["source"], "device": u["device"], "runs": u["runs"], "predicted": u["predicted"],
             "values": ", ".join(f"{k} {v:.2f}" for k, v in u["values"].items()),
             "before": u["before"]["mape"], "after": u["after"]["mape"], "max": u["after"]["max_ape"]} for u in units]
    return ["", "Few-shot: fit on 3 runs of one source and device (the smallest, the median and the largest model), "
                "predict the others", tables.table(rows, _FEW_SHOT)]


def _interval_lines(kind: str, f: dict) -> list[str]:
    held = f["overall"]["coverage_held_out"]
    head = (f"{f['coverage'] * 100:.0f} % interval, {kind} profiles ({f['residuals']}): measured within "
            f"[{tables.percent(math.expm1(f['low']))}, {tables.percent(math.expm1(f['high']))}] of the prediction; "
            f"covers {_pct(f['overall']['coverage'])} of the runs")
    if held is not None:
        head += f", {_pct(held)} with each source's quantiles from the other sources"
    if "shipped_coverage" in f:
        head += f"; {_pct(f['shipped_coverage'])} of the predictions as shipped (defaults)"
    return ["", head, tables.table(f["by_source"], _COVERAGE, indent="  ")]
