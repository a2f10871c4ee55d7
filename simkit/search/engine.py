"""The vectorized engine `simkit sweep` and `simkit optimize` share: columns of plan keys in, columns of
predictions out.

A batch of configurations is a set of equal-length columns, one per plan key that varies: numeric keys
as float arrays (NaN where a value is not a number), the other keys (precision, ZeRO stage,
checkpointing, ...) as codes into a list of values. Rows are grouped by their non-numeric values; each
group loads its plan once (the caller's `variant`, which validates the non-numeric choices) and runs one
vectorized `simulate` over its valid rows. Per row the engine derives what plan loading derives per plan:
data_parallel and grad_accum_steps (unless given), the layout rules (plan.LAYOUT_RULES) and the stack a
plan that does not name one runs on (plan.megatron_layout: fused kernels for Megatron-style layouts).
Nothing here reads files or prints.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from simkit import plan as plan_mod
from simkit.core.errors import SimkitError
from simkit.model.step import BREAKDOWN_KEYS, Block, Numeric, block, memory_part, simulate
from simkit.model.step import categorical as categorical_of

NUMERIC_KEYS = (
    "model.n_layers", "model.d_model", "model.n_heads", "model.n_kv_heads", "model.d_ff", "model.vocab_size",
    "model.seq_len", "training.global_batch_size", "training.micro_batch_size", "training.grad_accum_steps",
    "parallelism.data_parallel", "parallelism.tensor_parallel", "parallelism.pipeline_parallel",
    "parallelism.virtual_pipeline_stages", "parallelism.context_parallel", "hardware.devices_per_node",
    "hardware.nodes", "hardware.inter_node_links", "data.tokens", "data.samples", "data.epochs",
)
OUTPUT_KEYS = ("step_time_s", "samples_per_s", "tokens_per_s", "iterations_per_epoch", "epoch_time_s",
               "total_time_s", "mfu", "memory_per_device_bytes", "fits_in_memory") + BREAKDOWN_KEYS
# per-kind communication, for explaining a search's answer
COMM_OUTPUT_KEYS = ("comm_tensor_exposed", "comm_context_exposed", "comm_pipeline_exposed", "comm_data_exposed")
_NUMERIC_FIELDS = frozenset(f.name for f in dataclasses.fields(Numeric))


def memoized(load: Callable[[tuple], "plan_mod.Plan"]) -> Callable[[tuple], "plan_mod.Plan"]:
    """variant(assignment) for `evaluate`: `load(assignment)` once per assignment (a tuple of (key, value)),
    its SimkitError kept and raised again on every later call."""
    cache: dict[tuple, Any] = {}

    def variant(assignment: tuple):
        if assignment not in cache:
            try:
                cache[assignment] = load(assignment)
            except SimkitError as exc:
                cache[assignment] = exc
        found = cache[assignment]
        if isinstance(found, SimkitError):
            raise found
        return found
    return variant



@dataclass
class Batch:
    """Configurations as columns: `numeric` plan key -> float array; `choices` plan key -> (codes, values)."""

    size: int
    numeric: dict[str, np.ndarray] = field(default_factory=dict)
    choices: dict[str, tuple[np.ndarray, list]] = field(default_factory=dict)


def fixed_values(base) -> dict[str, float]:
    """The plan's value of every numeric key (what rows that do not vary a key take)."""
    m, t, p, h = base.model, base.training, base.parallelism, base.hw
    data = base.spec.data
    return {
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


def numeric_columns(base, given: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
    """Every numeric plan key as a column: `given` where varied, the plan's value elsewhere; d_ff and
    n_kv_heads follow d_model and n_heads when the plan derived them; data_parallel and grad_accum_steps
    derived per row unless given (as plan loading derives them)."""
    m = base.model
    fixed = fixed_values(base)
    out = {k: np.full(n, float(v)) for k, v in fixed.items()}
    for key, values in given.items():
        out[key] = np.asarray(values, dtype=float)
    if "model.d_model" in given and "model.d_ff" not in given and base.spec.model.d_ff == 4 * base.spec.model.d_model:
        out["model.d_ff"] = 4 * out["model.d_model"]
    if "model.n_heads" in given and "model.n_kv_heads" not in given and m.n_kv_heads == m.n_heads:
        out["model.n_kv_heads"] = out["model.n_heads"]
    devices = out["hardware.devices_per_node"] * out["hardware.nodes"]
    model_parallel = (out["parallelism.tensor_parallel"] * out["parallelism.pipeline_parallel"]
                      * out["parallelism.context_parallel"])
    if "parallelism.data_parallel" not in given:
        out["parallelism.data_parallel"] = devices / model_parallel
    if "training.grad_accum_steps" not in given:
        out["training.grad_accum_steps"] = out["training.global_batch_size"] / (
            out["training.micro_batch_size"] * out["parallelism.data_parallel"])
    out["_devices"], out["_mp"] = devices, model_parallel
    return out


def reasons(c: dict[str, np.ndarray], positive, attention: str = "fused") -> np.ndarray:
    """Why each row is invalid ('' when valid), in the loader's order; `positive`: keys that must be > 0."""
    n = len(c["model.d_model"])
    reason = np.full(n, "", dtype=object)
    open_ = np.ones(n, dtype=bool)       # rows without a reason yet

    def flag(mask, text):
        hit = open_ & mask
        if hit.any():
            reason[hit] = text
            open_[hit] = False

    for key in positive:
        flag(c[key] <= 0, f"{key} must be positive")
    flag(c["model.d_model"] % c["model.n_heads"] != 0, "n_heads does not divide d_model")
    flag(c["model.n_heads"] % c["model.n_kv_heads"] != 0, "n_kv_heads does not divide n_heads")
    values = {name: c[f"model.{name}"] for name in ("n_heads", "n_kv_heads", "n_layers", "seq_len")}
    values.update({name: c[f"parallelism.{name}"] for name in (
        "tensor_parallel", "pipeline_parallel", "virtual_pipeline_stages", "context_parallel")})
    values["attention"] = attention
    for _, invalid, text, _ in plan_mod.LAYOUT_RULES:
        flag(np.broadcast_to(invalid(values), (n,)), text)
    dp = c["parallelism.data_parallel"]
    flag((dp != np.floor(dp)) | (dp < 1), "tensor_parallel x pipeline_parallel x context_parallel does not divide the devices")
    flag(c["parallelism.data_parallel"] * c["_mp"] != c["_devices"],
         "data_parallel x tensor_parallel x pipeline_parallel x context_parallel != devices")
    accum = c["training.grad_accum_steps"]
    batch = "global_batch_size is not micro_batch_size x grad_accum_steps x data_parallel"
    flag((accum != np.floor(accum)) | (accum < 1), batch)
    flag(c["training.micro_batch_size"] * accum * c["parallelism.data_parallel"] != c["training.global_batch_size"],
         batch)
    return reason


def _groups(batch: Batch) -> list[tuple[tuple, np.ndarray]]:
    """(((key, value), ...), row indices) for each distinct combination of the non-numeric keys."""
    if not batch.choices:
        return [((), np.arange(batch.size))]
    keys = list(batch.choices)
    code = np.zeros(batch.size, dtype=np.int64)
    for key in keys:
        codes, values = batch.choices[key]
        code = code * len(values) + codes
    order = np.argsort(code, kind="stable")
    distinct, starts = np.unique(code[order], return_index=True)
    out = []
    for i, (value, start) in enumerate(zip(distinct, starts)):
        stop = starts[i + 1] if i + 1 < len(starts) else batch.size
        digits, rest = [], int(value)
        for key in reversed(keys):
            size = len(batch.choices[key][1])
            digits.append(batch.choices[key][1][rest % size])
            rest //= size
        out.append((tuple(zip(keys, reversed(digits))), np.sort(order[start:stop])))
    return out


def _stack(base) -> tuple[bool, bool]:
    """(whether the plan names its kernels, whether it names its master weights), for deriving them per row."""
    return (base.raw.get("model", {}).get("kernels") is not None,
            base.raw.get("training", {}).get("master_weights") is not None)


def evaluate(variant: Callable[[tuple], Any], batch: Batch, outputs=OUTPUT_KEYS,
             progress: Callable[[int, int, str], None] | None = None, chunk_rows: int = 16_384
             ) -> dict[str, np.ndarray]:
    """Predict every row of `batch`: {'reason': why a row is invalid ('' when valid), output key: array}.

    `variant(((key, value), ...))` returns the loaded plan for one combination of the non-numeric keys
    (raising SimkitError when that combination is invalid); numeric keys the batch does not vary take
    that plan's values. Invalid rows hold NaN (fits_in_memory: False) and their reason.
    Each group is simulated in blocks of at most `chunk_rows` rows (memory stays bounded, and arrays of
    that size stay in the CPU's cache); `progress(rows_done, rows_total, what)` is called after each block,
    `what` naming the group's values."""
    n = batch.size
    result = {"reason": np.full(n, "", dtype=object)}
    for key in outputs:
        result[key] = np.zeros(n, dtype=bool) if key == "fits_in_memory" else np.full(n, np.nan)
    result["_kernels"] = np.full(n, "", dtype=object)
    done = 0
    for assignment, rows in _groups(batch):
        try:
            base = variant(assignment)
        except SimkitError as exc:
            base, message = None, exc.message
        for start in range(0, len(rows), chunk_rows):
            block = rows[start:start + chunk_rows]
            if base is None:
                result["reason"][block] = message
            else:
                _evaluate_group(base, batch, block, result, outputs)
            done += len(block)
            if progress is not None:
                progress(done, n, ", ".join(f"{k.split('.')[-1]}={v}" for k, v in assignment))
    return result


@dataclass
class Prepared:
    """A block of rows ready to simulate: every numeric column (`cols`) and why each row is invalid
    (`reason`, '' when valid). It depends on the plan's numeric values only (`signature`), so a search
    prepares a block once and simulates it for every combination of the non-numeric choices."""

    cols: dict[str, np.ndarray]
    reason: np.ndarray
    ok: np.ndarray
    compact: dict[str, np.ndarray] = field(default_factory=dict)
    """`cols` with each column that holds one value over the block as a one-element array: simulate then
    computes what depends only on those (parameter counts, the hardware's links, ...) once, not per row."""
    shared: Block | None = None
    """The block's distinct micro-batch shapes, whose results every simulate call on the block shares."""


def signature(base) -> tuple:
    """What `prepare` takes from a loaded plan: equal signatures prepare equal blocks."""
    m = base.spec.model
    return (tuple(fixed_values(base).values()), m.d_ff == 4 * m.d_model, base.model.n_kv_heads == base.model.n_heads,
            base.model.attention)


def prepare(base, given: dict[str, np.ndarray], n: int) -> Prepared:
    """The block of `n` rows that vary `given` (plan key -> float array) from the plan `base`."""
    cols = numeric_columns(base, given, n)
    reason = reasons(cols, list(given), base.model.attention)
    for key, values in given.items():     # non-numbers first: they explain the NaNs
        bad = np.isnan(values)
        if bad.any():
            reason[bad] = f"{key}: not a number"
    compact = {key: value[:1] if _constant(value) else value for key, value in cols.items()}
    ok = reason == ""
    shared = block(_numeric(compact, None if ok.all() else np.flatnonzero(ok))) if ok.any() else None
    if shared is not None and shared.inverse is not None and not ok.all():   # indexed by every row of the block
        inverse = np.zeros(len(ok), dtype=shared.inverse.dtype)
        inverse[ok] = shared.inverse
        shared.inverse = inverse
    return Prepared(cols, reason, ok, compact, shared)


def _constant(col: np.ndarray) -> bool:
    if col.size <= 1:
        return True
    first = col[0]
    return bool((col == first).all()) if first == first else bool(np.isnan(col).all())


def run(base, prep: Prepared, result: dict, rows, outputs, memory_limit: float | None = None) -> None:
    """Simulate the valid rows of `prep` with the non-numeric values of `base`; output key -> value is
    written to result[key][rows] (rows: where the block's rows go, a slice or an index array).
    `memory_limit`: rows needing more memory per device get only memory_per_device_bytes (and
    fits_in_memory), the rest stays as the caller filled it: a search never times what cannot fit."""
    ok = prep.ok
    if not ok.any():
        return
    cols = prep.cols
    named_kernels, named_master = _stack(base)
    c0 = categorical_of(base)
    # what a plan that does not name its master weights and kernels runs on, per row (plan._derive_stack)
    tp, pp, cp = (cols[f"parallelism.{k}_parallel"] for k in ("tensor", "pipeline", "context"))
    if named_master:
        master = np.full(len(tp), base.training.master_weights)
    else:
        master = np.broadcast_to(plan_mod.default_master_weights(base.parallelism.zero_stage, tp, pp, cp), tp.shape)
    if named_kernels:
        kernels = np.full(len(tp), c0.implementation)
    else:
        kernels = np.where(plan_mod.megatron_layout(tp, pp, cp, master), "fused", "eager")
    parts = [(dataclasses.replace(c0, implementation=k, master_weights=m), ok & (kernels == k) & (master == m))
             for k in ("fused", "eager") for m in ("optimizer", "model")]
    index = np.arange(len(ok)) if isinstance(rows, slice) else rows
    for c, sel in parts:
        at = np.flatnonzero(sel)          # positions in the block
        if not len(at):
            continue
        num = _numeric(prep.compact, None if len(at) == len(ok) else at)
        where = np.take(index, at)
        part = None
        if memory_limit is not None:
            part = memory_part(c, num, prep.shared.rows(at))
            memory = np.broadcast_to(part.memory.total, (len(at),))
            fits = memory <= memory_limit
            if "memory_per_device_bytes" in outputs:
                result["memory_per_device_bytes"][where] = memory
            if "fits_in_memory" in outputs:
                result["fits_in_memory"][where] = fits
            if not fits.all():
                kept = np.flatnonzero(fits)
                if not len(kept):
                    continue
                part = part.rows(kept, len(at))
                at = np.take(at, kept)
                num = _numeric(prep.compact, at)
                where = np.take(index, at)
        r = simulate(c, num, prep.shared.rows(at), part)
        count = len(where)
        for key in outputs:
            result[key][where] = np.broadcast_to(np.asarray(r[key]), (count,))
        if "_kernels" in result:
            result["_kernels"][where] = c.implementation


def _evaluate_group(base, batch: Batch, rows: np.ndarray, result: dict, outputs) -> None:
    given = {k: v[rows] for k, v in batch.numeric.items()}
    prep = prepare(base, given, len(rows))
    result["reason"][rows] = prep.reason
    run(base, prep, result, rows, outputs)


def _numeric(cols: dict[str, np.ndarray], index: np.ndarray | None) -> Numeric:
    """The rows at `index` (sorted positions; None: every row) as simulate's Numeric (one-element columns
    stay one element: they broadcast)."""
    def take(value):
        return value if (index is None or value.size == 1) else np.take(value, index)

    fields = {key.split(".", 1)[1]: take(value) for key, value in cols.items()
              if "." in key and key.split(".", 1)[1] in _NUMERIC_FIELDS}
    tokens = take(cols["data.tokens"])
    tokens = np.where(np.isnan(tokens), take(cols["data.samples"]) * fields["seq_len"], tokens)
    return Numeric(**fields, tokens_per_epoch=tokens)
