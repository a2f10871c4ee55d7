"""Measured runs from files, whatever wrote them: published-cases YAML (simkit/validate/published.py),
`simkit validate --record` JSON lines, or a CSV/Parquet table with plan keys as dotted columns
(`model.n_layers`, `hardware.device`, ...) plus `step_time_s` or `tokens_per_s`. `simkit fit` and
`simkit validate --cv` read them; `load_run_plans` turns them into plans. Nothing here prints.

A run's `source` says who measured it (a published source, the record file's host, a table column);
`source_group` folds fine-grained sources into independent bodies of measurements (see its docstring).
"""
from __future__ import annotations

import copy
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from simkit.core.errors import SimkitError
from simkit.core.yamlio import Located
from simkit.plan import PlanSpec, load_plan_located

FORMATS = {".yaml": "published", ".yml": "published", ".jsonl": "record", ".json": "record", ".csv": "table",
           ".parquet": "table", ".pq": "table"}
SECTIONS = tuple(f for f in PlanSpec.__dataclass_fields__)      # model, data, training, parallelism, hardware
TABLE_KEYS = ("id", "source", "step_time_s", "tokens_per_s")     # table columns that are not plan keys


@dataclass(frozen=True)
class Run:
    """One measured run: its plan (with the file and line it came from) and the measured step time."""

    id: str
    source: str
    measured_step_time_s: float
    plan: Located
    where: str            # "FILE:LINE" (or "FILE: row N" for Parquet), for messages


def load_runs(paths) -> list[Run]:
    """The runs of every file, in order; a run id must be unique across the files."""
    runs, seen = [], {}
    for path in paths:
        for run in _load_file(Path(path)):
            if run.id in seen:
                raise SimkitError(f"run id {run.id!r} is also at {seen[run.id]}; ids must be unique",
                                  file=run.where)
            seen[run.id] = run.where
            runs.append(run)
    return runs


def load_run_plans(runs: list[Run]):
    """The validated plan of every run; an invalid plan is an error naming the run, its file and line."""
    plans = []
    for run in runs:
        loc = Located(copy.deepcopy(run.plan.data), run.plan.file, run.plan.lines)
        try:
            plans.append(load_plan_located(loc))
        except SimkitError as exc:
            raise SimkitError(f"run {run.id!r}: {exc.message}", file=exc.file, line=exc.line, key=exc.key) from None
    return plans


def source_group(source: str) -> str:
    """The independent body of measurements a run's source belongs to, for leave-one-source-out.

    Published sources name a repository (`owner/repo` first, e.g. 'mosaicml/llm-foundry scripts/...
    (A100 40GB, ...)', 'NVIDIA-NeMo/Megatron-Bridge:docs/... 25.09 NeMo Container ...') or a paper
    ('Narayanan et al. 2021 (Megatron-LM) Table 2, ...'). The rule: the leading `owner/repo` when the
    source starts with one, else the text before the first ' (' or ':' (the paper). So one repository's
    tables (container versions, GPU generations, README revisions) count as one source: they share the
    people, the software stack and the way of measuring.
    """
    text = source.strip().strip("'\"")
    repo = re.match(r"[\w.-]+/[\w.-]+", text)
    if repo:
        return repo.group(0)
    cut = min((i for i in (text.find(" ("), text.find(":")) if i >= 0), default=len(text))
    return text[:cut].strip() or source


# ----------------------------------------------------------------------------- formats
def _load_file(path: Path) -> list[Run]:
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise SimkitError(f"unknown kind of runs file {path.suffix!r}; allowed: .yaml/.yml (published cases), "
                          ".jsonl (validate --record), .csv or .parquet (plan keys + step_time_s)", file=str(path))
    if not path.is_file():
        raise SimkitError("file not found", file=str(path))
    runs = {"published": _published, "record": _records, "table": _table}[kind](path)
    if not runs:
        raise SimkitError("no runs in this file", file=str(path))
    return runs


def _published(path: Path) -> list[Run]:
    from simkit.validate.published import load_published

    return [Run(c.id, c.source, c.measured_step_time_s, c.plan, f"{path}:{c.plan.line(())}")
            for c in load_published(path)]


def _records(path: Path) -> list[Run]:
    """`simkit validate --record` lines: {plan, profile, measured: {step_time_s}, environment, ...}."""
    runs = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise SimkitError(f"cannot read: {exc}", file=str(path)) from None
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SimkitError(f"not a JSON line: {exc.msg}", file=str(path), line=number) from None
        if not isinstance(record, dict) or not isinstance(record.get("plan"), dict):
            raise SimkitError("expected a `simkit validate --record` line with 'plan' and 'measured'",
                              file=str(path), line=number)
        step = (record.get("measured") or {}).get("step_time_s")
        _check_step(step, path, number, "measured.step_time_s")
        host = (record.get("environment") or {}).get("host") or "this machine"
        name = Path(record.get("plan_file") or f"line{number}").stem
        runs.append(Run(f"{path.stem}:{number}:{name}", f"{path.name} (validate --record on {host})", float(step),
                        Located(record["plan"], str(path), {(): number}), f"{path}:{number}"))
    return runs


def _table(path: Path) -> list[Run]:
    """CSV (or Parquet) rows: dotted plan-key columns, `step_time_s` or `tokens_per_s`, optional id, source."""
    frame = _read_table(path)
    unknown = [c for c in frame.columns if c not in TABLE_KEYS and c.split(".")[0] not in SECTIONS]
    if unknown:
        raise SimkitError(f"column {unknown[0]!r} is not a plan key (SECTION.NAME with SECTION one of "
                          f"{', '.join(SECTIONS)}) nor one of {', '.join(TABLE_KEYS)}", file=str(path), line=1)
    if "step_time_s" not in frame.columns and "tokens_per_s" not in frame.columns:
        raise SimkitError("needs a step_time_s or a tokens_per_s column", file=str(path), line=1)
    csv = path.suffix.lower() == ".csv"
    runs = []
    for i, row in enumerate(frame.to_dict("records")):
        line = i + 2 if csv else None                         # CSV: the header is line 1
        where = f"{path}:{line}" if csv else f"{path}: row {i + 1}"
        cells = {k: _cell(v) for k, v in row.items()}
        plan: dict = {}
        for key, value in cells.items():
            if key not in TABLE_KEYS and value is not None:
                section, _, name = key.partition(".")
                plan.setdefault(section, {})[name] = value
        step = cells.get("step_time_s")
        if step is None and cells.get("tokens_per_s") is not None:
            step = _from_tokens(cells["tokens_per_s"], plan, path, line)
        _check_step(step, path, line, "step_time_s")
        lines = {(): line} if line else {}
        runs.append(Run(str(cells.get("id") or f"{path.stem}:{i + 1}"), str(cells.get("source") or path.name),
                        float(step), Located(plan, f"{path}" if csv else f"{path} (row {i + 1})", lines), where))
    return runs


def _read_table(path: Path):
    import pandas as pd

    try:
        if path.suffix.lower() == ".csv":
            return pd.read_csv(path, keep_default_na=True)
        return pd.read_parquet(path)
    except ImportError as exc:
        raise SimkitError(f"reading Parquet needs pyarrow or fastparquet ({exc}); pip install pyarrow, or "
                          "give a CSV", file=str(path)) from None
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise SimkitError(f"cannot read the table: {str(exc).splitlines()[0]}", file=str(path)) from None


def _cell(value):
    """A table cell as YAML would give it: None for empty, int for whole numbers, true/false for booleans."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if hasattr(value, "item"):                      # numpy scalar
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        return text or None
    return value


def _from_tokens(tokens_per_s, plan: dict, path: Path, line) -> float:
    """step time = global batch x seq_len / tokens per second."""
    try:
        tokens = float(plan["training"]["global_batch_size"]) * float(plan["model"]["seq_len"])
        return tokens / float(tokens_per_s)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        raise SimkitError(f"tokens_per_s {tokens_per_s!r} needs training.global_batch_size and model.seq_len "
                          "(or give step_time_s)", file=str(path), line=line) from None


def _check_step(step, path: Path, line, key: str) -> None:
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not math.isfinite(step) or step <= 0:
        raise SimkitError(f"{step!r} must be a positive number of seconds", file=str(path), line=line, key=key)
