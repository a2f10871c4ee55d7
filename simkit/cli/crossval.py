"""`simkit validate --published FILES --cv source [--write-interval FILE]`: the text and JSON of the
cross-validation by source (simkit/validate/crossval.py), and writing the interval file."""
from __future__ import annotations

import datetime
import json
import sys

import click

from simkit.report import tables

_pct = lambda x: tables.percent(x, signed=False)  # noqa: E731


def cross_validate(paths: list[str], write_interval: str | None, as_json: bool) -> None:
    from simkit.validate import crossval as cv
    from simkit.validate.runs import load_run_plans, load_runs

    tty = sys.stderr.isatty() and not as_json
    say = (lambda text: click.echo(f"\r{text}\033[K", err=True, nl=False)) if tty else None
    runs = load_runs(paths)
    plans = load_run_plans(runs)
    loso = cv.leave_source_out(runs, plans, progress=say)
    shots = cv.few_shot(runs, plans, progress=say)
    found = cv.intervals(loso, shots)
    if tty:
        click.echo("\r\033[K", err=True, nl=False)
    if write_interval:
        from simkit.core.yamlio import read_yaml, write_atomic
        from pathlib import Path

        existing = read_yaml(write_interval).data if Path(write_interval).exists() else {}
        write_atomic(write_interval, cv.interval_yaml(found, existing if isinstance(existing, dict) else {}, paths,
                                                      datetime.date.today().isoformat()))
    if as_json:
        click.echo(json.dumps({"leave_source_out": loso, "few_shot": shots, "intervals": found,
                               "interval_file": write_interval}, indent=2, default=float))
        return
    click.echo(text(" + ".join(paths), len(runs), loso, shots, found, write_interval))


def text(names: str, count: int, loso: dict, shots: dict, found: dict, written: str | None) -> str:
    lines = [f"{names}: {count} runs"]
    for kind in sorted({s["kind"] for s in loso["sources"]}):
        rows = [s for s in loso["sources"] if s["kind"] == kind]
        lines += ["", f"Leave one source out, {kind} profiles: each source predicted with the free parameters fitted "
                      "on the other sources only",
                  tables.table(rows, [("source", "source", tables.plain), ("count", "runs", str),
                                      ("loso_mape", "MAPE", _pct), ("loso_median_ape", "median", _pct),
                                      ("loso_max_ape", "max", _pct), ("loso_mean_error", "mean error", tables.percent),
                                      ("default_mape", "in-sample: defaults", _pct),
                                      ("default_max_ape", "defaults max", _pct),
                                      ("insample_mape", "in-sample: fit on all", _pct)]),
                  "  (defaults: no fit, every multiplier 1.0, as `simkit predict` ships; the model's constants were "
                  "chosen with these runs in view, so that column is in-sample too)"]
        fit_all = loso["fitted_all"][kind]["values"]
        lines.append(f"  fit on all {kind} sources: " + (", ".join(f"{k} {v:.3f}" for k, v in fit_all.items()) or "-"))
    if shots["units"]:
        rows = [{"source": u["source"], "device": u["device"], "runs": u["runs"], "predicted": u["predicted"],
                 "values": ", ".join(f"{k} {v:.2f}" for k, v in u["values"].items()),
                 "before": u["before"]["mape"], "after": u["after"]["mape"], "max": u["after"]["max_ape"]}
                for u in shots["units"]]
        lines += ["", "Few-shot: fit on 3 runs of one source and device (the smallest, the median and the largest "
                      "model), predict the others",
                  tables.table(rows, [("source", "source", tables.plain), ("device", "device", tables.plain),
                                      ("runs", "runs", str), ("predicted", "predicted", str),
                                      ("values", "fitted", tables.plain), ("before", "MAPE before", _pct),
                                      ("after", "MAPE after", _pct), ("max", "max after", _pct)])]
    for kind, f in found.items():
        lines += ["", f"{f['coverage'] * 100:.0f} % interval, {kind} profiles ({f['residuals']}): measured "
                      f"within [{tables.percent(_frac(f['low']))}, {tables.percent(_frac(f['high']))}] of the "
                      f"prediction; covers {_pct(f['overall']['coverage'])} of the runs"
                  + (f", {_pct(f['overall']['coverage_held_out'])} with each source's quantiles from the other "
                     "sources" if f["overall"]["coverage_held_out"] is not None else "")
                  + (f"; {_pct(f['shipped_coverage'])} of the predictions as shipped (defaults)"
                     if "shipped_coverage" in f else ""),
                  tables.table(f["by_source"], [("source", "source", tables.plain), ("count", "runs", str),
                                                ("coverage", "coverage", _pct),
                                                ("coverage_held_out", "held out", _pct)], indent="  ")]
    if written:
        lines += ["", f"wrote {written}"]
    return "\n".join(lines)


def _frac(log_ratio: float) -> float:
    import math

    return math.expm1(log_ratio)
