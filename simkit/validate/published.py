"""Predictions held against published measurements: `score_published(load_published(path))` predicts
every case of a published-cases file and summarizes the errors per source. Nothing here prints."""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path

from simkit.core.errors import Problems, SimkitError
from simkit.core.yamlio import Located, read_yaml
from simkit.plan import load_plan_located
from simkit.validate.common import PredictFn, default_predict, relative_error


# Cases are also summarized by the precision their matmuls run in.
PRECISION_GROUP = {"fp32": "fp32/tf32", "tf32": "fp32/tf32", "fp16": "bf16/fp16", "bf16": "bf16/fp16", "fp8": "fp8"}

# Keys of a case that are not plan keys: what the source published (`measured`), which plan keys it did
# not state (`assumed`) and what the plan format cannot express (`notes`).
CASE_KEYS = ("id", "source", "measured", "assumed", "notes")


@dataclass(frozen=True)
class PublishedCase:
    id: str
    source: str
    measured_step_time_s: float
    plan: Located          # the case's plan keys, with their line numbers in the file


def load_published_files(paths) -> list[PublishedCase]:
    """The cases of several published-cases files, in order; case ids must be unique across them."""
    cases, seen, problems = [], {}, Problems()
    for path in paths:
        for case in problems.call(load_published, path, default=[]):
            if case.id in seen:
                problems.add(SimkitError(f"case id {case.id!r} is also in {seen[case.id]}; ids must be unique",
                                         file=str(path), line=case.plan.lines.get(())))
                continue
            seen[case.id] = str(path)
            cases.append(case)
    problems.raise_if_any()
    return cases


def load_published(path: str | Path) -> list[PublishedCase]:
    """Cases of a published-cases file: a YAML list of plans with `id`, `source` and `measured.step_time_s`.
    Every broken case is reported at once."""
    loc = read_yaml(path)
    if not isinstance(loc.data, list):
        raise loc.error((), "expected a list of cases (- id: ..., source: ..., model: ..., measured: ...)")
    cases = []
    for i, raw in enumerate(loc.data):
        case = _case(loc, i, raw)
        if case is not None:
            cases.append(case)
    loc.problems.raise_if_any()
    return cases


def _case(loc: Located, i: int, raw) -> PublishedCase | None:
    """Case `i` of the file, or None after reporting what is wrong with it."""
    if not isinstance(raw, dict):
        loc.report((i,), "expected a mapping with id, source, measured and the plan keys")
        return None
    missing = [key for key in ("id", "source", "measured") if key not in raw]
    for key in missing:
        loc.report((i,), f"missing required key '{key}' in case {i + 1}")
    for key in ("id", "source"):
        if key in raw and (not isinstance(raw[key], (str, int)) or isinstance(raw[key], bool) or not str(raw[key]).strip()):
            loc.report((i, key), f"{raw[key]!r} is not a name")
            missing.append(key)
    if "measured" not in raw:
        return None
    if not isinstance(raw["measured"], dict):
        loc.report((i, "measured"), f"expected a mapping with step_time_s, got {type(raw['measured']).__name__}")
        return None
    step = raw["measured"].get("step_time_s")
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not 0 < step < math.inf:
        loc.report((i, "measured", "step_time_s"), f"{step!r} must be a positive number of seconds")
        return None
    if missing:
        return None
    plan = {k: v for k, v in raw.items() if k not in CASE_KEYS}
    lines = {k[1:]: v for k, v in loc.lines.items() if k and k[0] == i}
    return PublishedCase(str(raw["id"]), str(raw["source"]), float(step), Located(data=plan, file=loc.file, lines=lines))


def score_published(cases: list[PublishedCase], predict_fn: PredictFn = default_predict, worst: int = 5) -> dict:
    """Predict every case; per source (and 'all'): count, MAPE, median and max APE, the worst cases.

    Returns {"cases": [...], "sources": [...], "skipped": [...]} of plain dicts; cases whose plan cannot
    be loaded or predicted are listed under "skipped" with the reason."""
    import pandas as pd

    rows, skipped = [], []
    for case in cases:
        try:
            plan = load_plan_located(Located(copy.deepcopy(case.plan.data), case.plan.file, case.plan.lines))
            predicted = float(predict_fn(plan).step_time_s)
        except SimkitError as exc:  # every problem of the case, on one line
            skipped.append({"id": case.id, "source": case.source, "reason": "; ".join(exc.lines(5))})
            continue
        except NotImplementedError as exc:
            skipped.append({"id": case.id, "source": case.source, "reason": str(exc)})
            continue
        err = relative_error(predicted, case.measured_step_time_s)
        rows.append({"id": case.id, "source": case.source, "precision": PRECISION_GROUP[plan.training.precision],
                     "predicted_step_time_s": predicted, "measured_step_time_s": case.measured_step_time_s,
                     "error": err, "ape": abs(err)})
    frame = pd.DataFrame(rows, columns=["id", "source", "precision", "predicted_step_time_s", "measured_step_time_s",
                                        "error", "ape"])
    groups = [(src, g) for src, g in frame.groupby("source", sort=True)] + [("all", frame)]
    sources = [_source_summary(src, g, worst) for src, g in groups if len(g)]
    precisions = [_source_summary(name, g, worst) for name, g in frame.groupby("precision", sort=True)]
    return {"cases": rows, "sources": sources, "precisions": precisions, "skipped": skipped}


def _source_summary(source: str, g, worst: int) -> dict:
    top = g.sort_values("ape", ascending=False).head(worst)
    return {"source": source, "count": int(len(g)), "mape": float(g["ape"].mean()),
            "median_ape": float(g["ape"].median()), "max_ape": float(g["ape"].max()),
            "mean_error": float(g["error"].mean()),
            "worst": [{"id": r.id, "error": float(r.error), "predicted_step_time_s": float(r.predicted_step_time_s),
                       "measured_step_time_s": float(r.measured_step_time_s)} for r in top.itertuples()]}
