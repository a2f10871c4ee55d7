"""`simkit sweep`: every combination of varied plan keys, evaluated vectorized.

The combinations are built as columns (row i takes value i // (product of the later keys' counts) mod
its own count of each key, the order of itertools.product) and handed to the engine (engine.py), which
groups them by their non-numeric values, loads each group's plan once and simulates the group in one
call. Invalid combinations get a `reason` instead of numbers. `grad_accum_steps` and `data_parallel`
are re-derived for every row unless they are varied themselves.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from simkit import plan as plan_mod
from simkit.core.errors import SimkitError, close_names
from simkit.search.engine import NUMERIC_KEYS, OUTPUT_KEYS, Batch, evaluate, memoized

CHUNK_ROWS = 16_384   # rows per vectorized call: bounds memory, stays in cache, lets big sweeps report progress


def _all_keys() -> list[str]:
    keys = []
    for section in dataclasses.fields(plan_mod.PlanSpec):
        cls = {"model": plan_mod.ModelSpec, "data": plan_mod.DataSpec, "training": plan_mod.TrainingSpec,
               "parallelism": plan_mod.ParallelismSpec, "hardware": plan_mod.HardwareSpec}[section.name]
        keys += [f"{section.name}.{f.name}" for f in dataclasses.fields(cls)]
    return keys


def parse_vary(text: str) -> tuple[str, list[Any]]:
    """'training.micro_batch_size=1,2,4' -> ('training.micro_batch_size', [1, 2, 4])."""
    if "=" not in text:
        raise SimkitError(f"--vary {text!r}: expected KEY=V1,V2,..., e.g. training.micro_batch_size=1,2,4")
    key, values = text.split("=", 1)
    key = key.strip()
    if key not in _all_keys():
        raise SimkitError(f"--vary {text!r}: unknown key {key!r}; {close_names(key, _all_keys())}")
    parsed = [plan_mod.parse_yaml(v.strip(), file="--vary").data for v in values.split(",") if v.strip()]
    if not parsed:
        raise SimkitError(f"--vary {text!r}: no values given")
    return key, parsed


def _values_column(values: list, index: np.ndarray) -> np.ndarray:
    """The varied values of one key per row, typed for a table: integers, floats, booleans or text."""
    kinds = {type(v) for v in values}
    if kinds <= {int}:
        return np.asarray(values, dtype=np.int64)[index]
    if kinds <= {int, float}:
        return np.asarray(values, dtype=float)[index]
    if kinds == {bool}:
        return np.asarray(values, dtype=bool)[index]
    return np.asarray([str(v) for v in values], dtype=object)[index]


def _as_number(v) -> float:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan


def _variants(source, overrides: tuple[str, ...]):
    """variant(((key, value), ...)) -> the plan with those values set, each loaded once."""
    loc = plan_mod.read_yaml(source) if isinstance(source, (str, plan_mod.Path)) else source
    return memoized(lambda assignment: plan_mod.load_plan(
        loc, tuple(overrides) + tuple(f"{k}={v}" for k, v in assignment)))


def sweep_columns(source, varies: list[str], overrides: tuple[str, ...] = (),
                  progress: Callable[[int, int, str], None] | None = None) -> dict[str, np.ndarray]:
    """Every combination of the varied keys as columns: the varied keys, `reason` ('' when valid) and the
    predictions (NaN on invalid rows; fits_in_memory a masked array, masked there). `progress(rows_done,
    rows_total, what)` is called after each group of non-numeric values ('precision=bf16, zero_stage=1')."""
    parsed = [parse_vary(v) for v in varies]
    keys = [k for k, _ in parsed]
    if len(set(keys)) != len(keys):
        raise SimkitError("--vary: each key may be varied once")
    counts = [len(vals) for _, vals in parsed]
    size = int(np.prod(counts))
    index = np.unravel_index(np.arange(size), counts) if size else [np.zeros(0, dtype=np.intp)] * len(keys)
    batch = Batch(size)
    for (key, values), idx in zip(parsed, index):
        if key in NUMERIC_KEYS:
            batch.numeric[key] = np.array([_as_number(v) for v in values], dtype=float)[idx]
        else:
            batch.choices[key] = (idx, values)
    result = evaluate(_variants(source, overrides), batch, progress=progress, chunk_rows=CHUNK_ROWS)
    reason = result["reason"]
    for (key, values), idx in zip(parsed, index):       # name the value that is not a number
        if key in NUMERIC_KEYS:
            texts = np.array([f"{key}: {v!r} is not a number" for v in values], dtype=object)
            bad = np.isnan(batch.numeric[key])
            reason[bad] = texts[idx[bad]]
    out = {key: _values_column(values, idx) for (key, values), idx in zip(parsed, index)}
    out["reason"] = reason
    valid = reason == ""
    for key in OUTPUT_KEYS:
        column = result[key]
        if key == "fits_in_memory":
            column = np.ma.array(column, mask=~valid)
        else:
            column[~valid] = np.nan
        out[key] = column
    return out


def run_sweep(source, varies: list[str], overrides: tuple[str, ...] = (),
              progress: Callable[[int, int, str], None] | None = None):
    """Evaluate every combination; returns a pandas DataFrame (varied keys, reason, outputs)."""
    import pandas as pd

    columns = sweep_columns(source, varies, overrides, progress)
    fits = columns["fits_in_memory"]
    columns["fits_in_memory"] = np.where(np.ma.getmaskarray(fits), None, np.ma.getdata(fits)).astype(object)
    return pd.DataFrame(columns)
