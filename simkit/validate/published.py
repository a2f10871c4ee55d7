"""Predictions held against published measurements: `score_published(load_published(path))` predicts
every case of a published-cases file and summarizes the errors per source. Nothing here prints."""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

from simkit.core.errors import SimkitError
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
    cases, seen = [], {}
    for path in paths:
        for case in load_published(path):
            if case.id in seen:
                raise SimkitError(f"case id {case.id!r} is also in {seen[case.id]}; ids must be unique", file=str(path))
            seen[case.id] = str(path)
            cases.append(case)
    return cases


def load_published(path: str | Path) -> list[PublishedCase]:
    """Cases of a published-cases file: a YAML list of plans with `id`, `source` and `measured.step_time_s`."""
    loc = read_yaml(path)
    if not isinstance(loc.data, list):
        raise loc.error((), "expected a list of cases (- id: ..., source: ..., model: ..., measured: ...)")
    cases = []
    for i, raw in enumerate(loc.data):
        if not isinstance(raw, dict):
            raise loc.error((i,), "expected a mapping with id, source, measured and the plan keys")
        for key in ("id", "source", "measured"):
            if key not in raw:
                raise loc.error((i,), f"missing required key '{key}' in case {i + 1}")
        step = (raw["measured"] or {}).get("step_time_s") if isinstance(raw["measured"], dict) else None
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0:
            raise loc.error((i, "measured", "step_time_s"), f"{step!r} must be a positive number of seconds")
        plan = {k: v for k, v in raw.items() if k not in CASE_KEYS}
        lines = {k[1:]: v for k, v in loc.lines.items() if k and k[0] == i}
        cases.append(PublishedCase(str(raw["id"]), str(raw["source"]), float(step),
                                   Located(data=plan, file=loc.file, lines=lines)))
    return cases


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
        except (SimkitError, NotImplementedError) as exc:
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
