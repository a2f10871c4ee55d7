"""`simkit fit`: the model's free parameters (simkit/model/params.py) fitted to a handful of measured runs,
written as a profile overlay that `hardware.device: FILE` (or `validate --profile FILE`) uses."""
from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

import click

from simkit.core.errors import SimkitError, close_names
from simkit.report import tables

RUNS_HELP = ("published-cases YAML, `simkit validate --record` JSONL, or CSV/Parquet with plan keys as columns "
             "(model.n_layers, hardware.device, ...) and step_time_s or tokens_per_s")


_pct = lambda x: tables.percent(x, signed=False)  # noqa: E731
_ERROR_COLUMNS = [("what", "", tables.plain), ("mape", "MAPE", _pct), ("median_ape", "median", _pct),
                  ("max_ape", "max", _pct), ("mean_error", "mean error", tables.percent)]


@click.command("fit")
@click.argument("runs", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="The profile overlay to write (YAML).")
@click.option("--device", "device_name", metavar="NAME",
              help="Fit the runs on this device (catalogue name, profile name or file) when they span several.")
@click.option("--params", metavar="NAME[,NAME...]",
              help="Parameters to fit (gemm, attention, memory, network, overlap) [default: those the runs are "
              "sensitive to, the most influential first, at most one per run].")
@click.option("--check", "check", multiple=True, type=click.Path(dir_okay=False), metavar="RUNS",
              help="Other measured runs (same device) to predict with and without the fit: a held-out test. Repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def fit_cmd(runs, output, device_name, params, check, as_json):
    """Fit the model's free parameters to measured RUNS by robust least squares in log space, regularized toward
    the defaults; report the error before, after and held out, and write a profile overlay (--output) that
    `hardware.device: FILE` uses.

    RUNS: published-cases YAML, `simkit validate --record` JSONL, or CSV/Parquet with plan keys as columns
    (model.n_layers, hardware.device, ...) and step_time_s or tokens_per_s."""
    from simkit.search import fit as F
    from simkit.validate import crossval

    if not runs:
        raise SimkitError(f"no runs given: simkit fit RUNS... --output FILE, with RUNS files of {RUNS_HELP}")
    if not output:
        raise SimkitError("give --output FILE: the profile overlay to write")
    names = _names(params)
    chosen, plans, ignored = _runs(runs, device_name)
    measured = [r.measured_step_time_s for r in chosen]
    if names and len(names) > len(chosen):
        raise SimkitError(f"{len(chosen)} run{'s' * (len(chosen) != 1)} cannot fit {len(names)} parameters "
                          f"({', '.join(names)}): give at least {len(names)} runs or name at most {len(chosen)} "
                          "with --params")
    checks = _runs(check, _device_key(plans[0].device)) if check else None
    say = _progress(as_json)
    say(f"fitting {len(chosen)} runs on {plans[0].device.name} ...")
    result = F.fit(F.Evaluator(plans), measured, names, strict=bool(names))
    held, label = result.before, "leave-one-out"
    if result.names:
        held, label = crossval.fit_held_out(plans, measured, result.names,
                                            progress=lambda i, n: say(f"{F.cv_folds(len(chosen))[1]}: {i}/{n}"))
    say("")
    _write(output, runs, plans[0].device, result, len(chosen))
    doc = _document(result, held, label, chosen, ignored, plans[0].device, output)
    if checks:
        doc["check"] = _check(checks, result.values)
    click.echo(json.dumps(doc, indent=2) if as_json else _text(doc))


def _runs(paths, device_name):
    """(runs, plans, ignored count) of the files, those on one device."""
    from simkit.validate.runs import load_run_plans, load_runs

    all_runs = load_runs(paths)
    all_plans = load_run_plans(all_runs)
    keep = _select(all_plans, device_name)
    return [all_runs[i] for i in keep], [all_plans[i] for i in keep], len(all_runs) - len(keep)


def _write(output, runs, device, result, count: int) -> None:
    from simkit.core.yamlio import write_atomic
    from simkit.hardware.overlay import overlay_text

    note = f"{', '.join(Path(p).name for p in runs)}, {datetime.date.today().isoformat()}"
    header = (f"Written by simkit fit {' '.join(runs)} --output {output}\n{count} runs on {device.name}; fitted: "
              + (", ".join(f"{n} {result.values[n]:.4g}" for n in result.names) or "nothing"))
    write_atomic(output, overlay_text(device, result.values, result.stderr, runs=count, note=note, header=header))


def _check(checks, values) -> dict:
    """Errors of other runs predicted with the defaults and with the fitted values."""
    import numpy as np

    from simkit.search.fit import Evaluator
    from simkit.validate.crossval import summary

    runs, plans, ignored = checks
    ev = Evaluator(plans)
    measured = np.array([r.measured_step_time_s for r in runs])
    return {"runs": len(runs), "ignored_runs": ignored,
            "defaults": summary(ev.step_times({}) / measured - 1), "fitted": summary(ev.step_times(values) / measured - 1)}


def _names(params: str | None) -> list[str] | None:
    from simkit.model.params import NAMES

    if params is None:
        return None
    names = [p.strip() for p in params.split(",") if p.strip()]
    for name in names:
        if name not in NAMES:
            raise SimkitError(f"--params: unknown parameter {name!r}; {close_names(name, NAMES)}")
    if not names:
        raise SimkitError(f"--params: name at least one of {', '.join(NAMES)}")
    return list(dict.fromkeys(names))


def _device_key(device) -> str:
    return str(Path(device.path).resolve()) if device.path else device.name


def _select(plans, name: str | None) -> list[int]:
    """Indices of the runs to fit: all, when they share one device; else those on --device NAME."""
    keys: dict[str, list[int]] = {}
    labels = {}
    for i, plan in enumerate(plans):
        key = _device_key(plan.device)
        keys.setdefault(key, []).append(i)
        labels[key] = plan.device.name if _is_catalogue(plan.device) else plan.device.path
    if name is None:
        if len(keys) > 1:
            listed = ", ".join(f"{labels[k]} ({len(v)} run{'s' * (len(v) != 1)})" for k, v in keys.items())
            raise SimkitError(f"runs on {len(keys)} devices: {listed}; say which to fit with --device NAME")
        return next(iter(keys.values()))
    wanted = str(Path(name).resolve()) if ("/" in name or name.endswith((".yaml", ".yml"))) else None
    hits = [i for k, idx in keys.items() for i in idx if name in (k, wanted, plans[idx[0]].device.name)]
    if not hits:
        raise SimkitError(f"--device {name!r}: no run is on it; the runs are on "
                          + ", ".join(sorted(set(labels.values()))))
    return hits


def _is_catalogue(device) -> bool:
    from simkit.hardware.catalogue import catalogue_dir

    return Path(device.path).resolve().parent == (catalogue_dir() / "devices").resolve() if device.path else True


def _progress(quiet: bool):
    tty = sys.stderr.isatty() and not quiet

    def say(text: str) -> None:
        if tty:
            click.echo(f"\r{text}\033[K", err=True, nl=False)

    return say


def _document(result, held, label, chosen, ignored, device, output) -> dict:
    import numpy as np

    from simkit.search.fit import LINEAR, PRIOR_SIGMA
    from simkit.validate.crossval import summary

    err = lambda r: summary(np.expm1(r))  # noqa: E731
    params = [{"name": n, "value": result.values[n], "stderr": result.stderr[n],
               "prior": {"value": 1.0, "sigma": PRIOR_SIGMA, "scale": "linear" if n in LINEAR else "log"},
               "sensitivity": result.sensitivity[n]} for n in result.names]
    return {"runs": len(chosen), "ignored_runs": ignored, "device": device.name,
            "base_profile": device.path, "had_fitted": dict(device.fitted), "parameters": params,
            "not_fitted": result.skipped, "converged": result.converged, "evaluations": result.evaluations,
            "errors": {"defaults": err(result.before), "fitted_in_sample": err(result.after),
                       "fitted_held_out": err(held), "held_out_method": label},
            "per_run": [{"id": r.id, "measured_step_time_s": r.measured_step_time_s,
                         "error_before": float(np.expm1(b)), "error_after": float(np.expm1(a)),
                         "error_held_out": float(np.expm1(h))}
                        for r, b, a, h in zip(chosen, result.before, result.after, held)],
            "output": str(output)}


def _text(doc: dict) -> str:
    lines = [f"simkit fit: {doc['runs']} run{'s' * (doc['runs'] != 1)} on {doc['device']}"
             + (f" ({doc['ignored_runs']} on other devices ignored)" if doc["ignored_runs"] else "")]
    if doc["had_fitted"]:
        lines.append(f"  the runs' profile already had fitted values ({_values(doc['had_fitted'])}); the fit starts "
                     "again from the defaults and replaces them")
    rows = [{"name": p["name"], "value": f"{p['value']:.3f}", "stderr": f"{p['stderr']:.3f}",
             "prior": f"1, {'sd' if p['prior']['scale'] == 'linear' else 'log-sd'} {p['prior']['sigma']:.2f}",
             "sens": f"{p['sensitivity']:.2f}"} for p in doc["parameters"]]
    lines += ["", tables.table(rows, [("name", "parameter", tables.plain), ("value", "value", tables.plain),
                                       ("stderr", "stderr", tables.plain), ("prior", "prior", tables.plain),
                                       ("sens", "sensitivity", tables.plain)]) if rows else "no parameter fitted"]
    if rows:
        lines.append("  (value: a multiplier of the profile's default, overlap a share; sensitivity: mean |d log step "
                     "time / d log value| over the runs, per unit share for overlap)")
    if doc["not_fitted"]:
        lines.append("not fitted: " + "; ".join(f"{k} ({v})" for k, v in doc["not_fitted"].items()))
    e = doc["errors"]
    table = [{"what": "defaults (no fit)", **e["defaults"]}, {"what": "fitted, in-sample", **e["fitted_in_sample"]},
             {"what": f"fitted, {e['held_out_method']}", **e["fitted_held_out"]}]
    lines += ["", "step time error over the runs:",
              tables.table(table, _ERROR_COLUMNS, indent="  "),
              *_check_lines(doc.get("check")),
              "", f"wrote {doc['output']}: use it with hardware.device: {doc['output']} "
              f"(or --set hardware.device={doc['output']}, or validate --profile {doc['output']})"]
    return "\n".join(lines)


def _check_lines(check: dict | None) -> list[str]:
    if not check:
        return []
    rows = [{"what": "defaults (no fit)", **check["defaults"]}, {"what": "fitted", **check["fitted"]}]
    return ["", f"step time error over the {check['runs']} --check runs (not used by the fit):",
            tables.table(rows, _ERROR_COLUMNS, indent="  ")]


def _values(values: dict) -> str:
    return ", ".join(f"{k} {v:.3g}" for k, v in values.items())
