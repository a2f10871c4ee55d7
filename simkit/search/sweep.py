"""`simkit sweep`: every combination of varied plan keys, evaluated vectorized.

Combinations are grouped by their non-numeric values (device, precision, ...); within a group the
numeric keys become numpy arrays and one call of `simulator.simulate` evaluates the whole group.
Invalid combinations get a `reason` instead of numbers. `grad_accum_steps` and `data_parallel` are
re-derived for every row unless they are varied themselves.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Callable

import numpy as np

from simkit import plan as plan_mod
from simkit.core.errors import SimkitError, close_names
from simkit.model.step import BREAKDOWN_KEYS, Numeric, simulate
from simkit.model.step import categorical as categorical_of

NUMERIC_KEYS = {
    "model.n_layers", "model.d_model", "model.n_heads", "model.n_kv_heads", "model.d_ff", "model.vocab_size",
    "model.seq_len", "training.global_batch_size", "training.micro_batch_size", "training.grad_accum_steps",
    "parallelism.data_parallel", "parallelism.tensor_parallel", "parallelism.pipeline_parallel",
    "parallelism.virtual_pipeline_stages", "parallelism.context_parallel", "hardware.devices_per_node",
    "hardware.nodes", "hardware.inter_node_links", "data.tokens", "data.samples", "data.epochs",
}
CHUNK_ROWS = 50_000   # rows per vectorized call: bounds memory and lets big sweeps report progress
OUTPUT_KEYS = ("step_time_s", "samples_per_s", "tokens_per_s", "iterations_per_epoch", "epoch_time_s",
               "total_time_s", "mfu", "memory_per_device_bytes", "fits_in_memory") + BREAKDOWN_KEYS


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


def _numeric_columns(base: plan_mod.Plan, rows: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    m, t, p, h = base.model, base.training, base.parallelism, base.hw
    data = base.spec.data
    cols = {
        "model.n_layers": m.n_layers, "model.d_model": m.d_model, "model.n_heads": m.n_heads,
        "model.n_kv_heads": m.n_kv_heads, "model.d_ff": m.d_ff, "model.vocab_size": m.vocab_size,
        "model.seq_len": m.seq_len, "training.global_batch_size": t.global_batch_size,
        "training.micro_batch_size": t.micro_batch_size, "parallelism.tensor_parallel": p.tensor_parallel,
        "parallelism.pipeline_parallel": p.pipeline_parallel,
        "parallelism.virtual_pipeline_stages": p.virtual_pipeline_stages,
        "parallelism.context_parallel": p.context_parallel,
        "hardware.devices_per_node": h.devices_per_node, "hardware.nodes": h.nodes,
        "hardware.inter_node_links": h.inter_node_links,
        "data.tokens": data.tokens if data and data.tokens else np.nan,
        "data.samples": data.samples if data and data.samples else np.nan,
        "data.epochs": data.epochs if data else 1.0,
    }
    out = {k: np.full(n, float(v)) for k, v in cols.items()}
    for key, values in rows.items():
        if key in NUMERIC_KEYS:
            out[key] = values.astype(float)
    if "model.d_model" in rows and "model.d_ff" not in rows and base.spec.model.d_ff == 4 * base.spec.model.d_model:
        out["model.d_ff"] = 4 * out["model.d_model"]
    if "model.n_heads" in rows and "model.n_kv_heads" not in rows and m.n_kv_heads == m.n_heads:
        out["model.n_kv_heads"] = out["model.n_heads"]
    devices = out["hardware.devices_per_node"] * out["hardware.nodes"]
    model_parallel = (out["parallelism.tensor_parallel"] * out["parallelism.pipeline_parallel"]
                      * out["parallelism.context_parallel"])
    out["parallelism.data_parallel"] = rows["parallelism.data_parallel"].astype(float) \
        if "parallelism.data_parallel" in rows else devices / model_parallel
    per_step = out["training.micro_batch_size"] * out["parallelism.data_parallel"]
    out["training.grad_accum_steps"] = rows["training.grad_accum_steps"].astype(float) \
        if "training.grad_accum_steps" in rows else out["training.global_batch_size"] / per_step
    out["_devices"], out["_mp"] = devices, model_parallel
    return out


def _reasons(c: dict[str, np.ndarray], positive: list[str], attention: str = "fused") -> np.ndarray:
    """Why each row is invalid ('' when valid), checked vectorized in the loader's order."""
    reason = np.full(len(c["model.d_model"]), "", dtype=object)

    def flag(mask, text):
        nonlocal reason
        reason = np.where((reason == "") & mask, text, reason)

    for key in positive:
        flag(c[key] <= 0, f"{key} must be positive")
    flag(c["model.d_model"] % c["model.n_heads"] != 0, "n_heads does not divide d_model")
    flag(c["model.n_heads"] % c["model.n_kv_heads"] != 0, "n_kv_heads does not divide n_heads")
    tp, pp, vp, cp = (c[f"parallelism.{k}"] for k in ("tensor_parallel", "pipeline_parallel",
                                                      "virtual_pipeline_stages", "context_parallel"))
    flag(c["model.n_heads"] % tp != 0, "tensor_parallel does not divide n_heads")
    flag(c["model.n_kv_heads"] % tp != 0, "tensor_parallel does not divide n_kv_heads")
    flag(pp > c["model.n_layers"], "pipeline_parallel is more than n_layers")
    flag((vp > 1) & (pp == 1), "virtual_pipeline_stages > 1 needs pipeline_parallel > 1")
    flag(pp * vp > c["model.n_layers"], "pipeline_parallel x virtual_pipeline_stages is more than n_layers")
    flag(c["model.seq_len"] % cp != 0, "context_parallel does not divide seq_len")
    if attention != "fused":
        flag(cp > 1, "context_parallel > 1 needs model.attention: fused")
    dp = c["parallelism.data_parallel"]
    flag((dp != np.floor(dp)) | (dp < 1),
         "tensor_parallel x pipeline_parallel x context_parallel does not divide the devices")
    flag(c["parallelism.data_parallel"] * c["_mp"] != c["_devices"],
         "data_parallel x tensor_parallel x pipeline_parallel x context_parallel != devices")
    accum = c["training.grad_accum_steps"]
    flag((accum != np.floor(accum)) | (accum < 1),
         "global_batch_size is not micro_batch_size x grad_accum_steps x data_parallel")
    flag(c["training.micro_batch_size"] * accum * c["parallelism.data_parallel"] != c["training.global_batch_size"],
         "global_batch_size is not micro_batch_size x grad_accum_steps x data_parallel")
    return reason


def run_sweep(source, varies: list[str], overrides: tuple[str, ...] = (),
              progress: Callable[[int, int, str], None] | None = None):
    """Evaluate every combination; returns a pandas DataFrame (varied keys, outputs, reason).

    `progress(rows_done, rows_total, what)` is called after each evaluated block of rows (groups of
    non-numeric values, cut into blocks of at most CHUNK_ROWS), `what` naming the group's values
    ('precision=bf16, zero_stage=1')."""
    import pandas as pd

    parsed = [parse_vary(v) for v in varies]
    keys = [k for k, _ in parsed]
    if len(set(keys)) != len(keys):
        raise SimkitError("--vary: each key may be varied once")
    combos = pd.DataFrame(list(itertools.product(*[vals for _, vals in parsed])), columns=keys)
    cat_keys = [k for k in keys if k not in NUMERIC_KEYS]
    frames, done = [], 0
    groups = combos.groupby(cat_keys, sort=False, dropna=False) if cat_keys else [((), combos)]
    for values, group in groups:
        values = values if isinstance(values, tuple) else (values,)
        categorical = dict(zip(cat_keys, values))
        for start in range(0, len(group), CHUNK_ROWS):
            frames.append(_evaluate_group(source, overrides, categorical, group.iloc[start:start + CHUNK_ROWS], keys))
            done += len(frames[-1])
            if progress is not None:
                progress(done, len(combos), ", ".join(f"{k.split('.')[-1]}={v}" for k, v in categorical.items()))
    out = pd.concat(frames).sort_index()
    return out


def _evaluate_group(source, overrides, categorical: dict, group, keys):
    import pandas as pd

    result = group.copy()
    sets = tuple(overrides) + tuple(f"{k}={v}" for k, v in categorical.items())
    try:
        base = plan_mod.load_plan(source, sets)
    except SimkitError as exc:
        result["reason"] = exc.message if hasattr(exc, "message") else str(exc)
        return result
    n = len(group)
    raw = {k: group[k] for k in keys if k in NUMERIC_KEYS}
    rows = {k: pd.to_numeric(v.where(v.map(lambda x: not isinstance(x, bool))), errors="coerce").to_numpy(float)
            for k, v in raw.items()}
    cols = _numeric_columns(base, rows, n)
    reason = _reasons(cols, [k for k in rows], base.model.attention)
    for key, values in raw.items():     # non-numbers first: they explain the NaNs
        bad = np.isnan(rows[key])
        reason = np.where(bad, [f"{key}: {v!r} is not a number" for v in values], reason)
    ok = reason == ""
    result["reason"] = reason
    if ok.any():
        sel = {k: v[ok] for k, v in cols.items()}
        tokens = np.where(np.isnan(sel["data.tokens"]), sel["data.samples"] * sel["model.seq_len"], sel["data.tokens"])
        fields = {f.name for f in dataclasses.fields(Numeric)}
        num = Numeric(**{key.split(".")[1]: value for key, value in sel.items()
                         if "." in key and key.split(".")[1] in fields},
                      tokens_per_epoch=tokens)
        r = simulate(categorical_of(base), num)
        for key in OUTPUT_KEYS:
            column = np.full(n, np.nan, dtype=object if key == "fits_in_memory" else float)
            column[ok] = np.broadcast_to(np.asarray(r[key]), (int(ok.sum()),))
            result[key] = column
    return result
