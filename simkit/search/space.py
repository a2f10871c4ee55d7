"""The space `simkit optimize` searches: which values each key may take, and every valid layout of them,
enumerated in chunks of numpy columns.

Searched by default (each narrowed by --fix KEY=V or replaced by --allow KEY=V1,V2,...):
- tensor_parallel: the divisors of the devices that divide n_heads and n_kv_heads (Megatron splits both);
- pipeline_parallel: the divisors of the devices up to n_layers;
- context_parallel: the divisors of the devices that divide seq_len (fused attention only);
- virtual_pipeline_stages: with pipeline parallelism, the v for which pipeline x v divides n_layers (the
  interleaved schedule's equal chunks), and 1;
- micro_batch_size: the divisors of the batch each data-parallel replica takes per step (global batch /
  data parallel), so grad_accum_steps = that / micro_batch_size is whole;
- zero_stage 0..3, activation_checkpointing none / selective / full, sequence_parallel (with TP > 1).
data_parallel is what the devices leave: devices / (tensor x pipeline x context). The global batch,
precision, nodes and every other plan key stay as the plan has them unless allowed.
"""
from __future__ import annotations

import functools
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simkit.core.errors import SimkitError
from simkit.search.engine import NUMERIC_KEYS

LAYOUT_KEYS = ("parallelism.tensor_parallel", "parallelism.pipeline_parallel", "parallelism.context_parallel",
               "parallelism.virtual_pipeline_stages", "training.micro_batch_size")
DERIVED_KEYS = ("parallelism.data_parallel", "training.grad_accum_steps")
CHOICE_DEFAULTS = {"parallelism.zero_stage": [0, 1, 2, 3],
                   "training.activation_checkpointing": ["none", "selective", "full"],
                   "parallelism.sequence_parallel": [True, False]}
CHUNK_ROWS = 32768       # rows per simulate call: large enough to amortize the call, small enough for the cache


@functools.lru_cache(maxsize=1024)
def divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


@dataclass
class Space:
    """Allowed values: `numeric` keys (layout keys may be None: derived from the plan per row) and `choices`
    (the non-numeric keys, one plan loaded per combination)."""

    numeric: dict[str, list | None] = field(default_factory=dict)
    choices: dict[str, list] = field(default_factory=dict)
    derived: dict[str, set] = field(default_factory=dict)   # data_parallel / grad_accum_steps filters

    def size_hint(self) -> int:
        return int(np.prod([len(v) for v in self.choices.values()] or [1]))


def build_space(plan, allowed: dict[str, list[Any]]) -> Space:
    """The space for `plan` (its devices and batch), with `allowed` values replacing the defaults."""
    space = Space()
    for key in LAYOUT_KEYS:
        space.numeric[key] = allowed.get(key)
    for key, values in CHOICE_DEFAULTS.items():
        space.choices[key] = list(allowed.get(key, values))
    for key, values in allowed.items():
        if key in DERIVED_KEYS:
            space.derived[key] = {float(v) for v in values}
        elif key in LAYOUT_KEYS or key in CHOICE_DEFAULTS:
            continue
        elif key in NUMERIC_KEYS:
            space.numeric[key] = list(values)
        else:
            space.choices[key] = list(values)
    for key, values in space.numeric.items():
        if values is not None and any(isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0
                                      for v in values):
            raise SimkitError(f"--allow {key}: {values!r}: expected positive numbers")
    return space


def _candidates(values, default: list[int]) -> list[int]:
    return default if values is None else [int(v) for v in values]


ROW_KEYS = ("parallelism.tensor_parallel", "parallelism.context_parallel", "parallelism.pipeline_parallel",
            "parallelism.data_parallel", "parallelism.virtual_pipeline_stages", "training.micro_batch_size",
            "training.grad_accum_steps")


def layouts(plan, space: Space, chunk_rows: int = CHUNK_ROWS):
    """Chunks of valid numeric layouts: dicts of plan key -> float array (at most `chunk_rows` rows each),
    every row whole in its divisions. Rows are made per value of the other numeric keys (nodes, batch,
    ...), so memory stays at about one chunk whatever the size of the space."""
    h, t = plan.hw, plan.training
    extra = {k: v for k, v in space.numeric.items() if k not in LAYOUT_KEYS and v is not None}
    extra.setdefault("hardware.nodes", [h.nodes])
    extra.setdefault("training.global_batch_size", [t.global_batch_size])
    keys = list(extra)
    rows: list[tuple] = []
    for combo in itertools.product(*(extra[k] for k in keys)):
        for row in _layout_rows(plan, space, dict(zip(keys, combo))):
            rows.append(combo + row)
            if len(rows) == chunk_rows:
                yield _columns(keys, rows)
                rows = []
    if rows:
        yield _columns(keys, rows)


def _columns(keys: list[str], rows: list[tuple]) -> dict[str, np.ndarray]:
    table = np.array(rows, dtype=float)
    return {key: np.ascontiguousarray(table[:, i]) for i, key in enumerate(list(keys) + list(ROW_KEYS))}


def _layout_rows(plan, space: Space, fixed: dict):
    """(tp, cp, pp, dp, vp, micro-batch, accumulation) rows for one value of every other numeric key."""
    m, h = plan.model, plan.hw
    n_layers = int(fixed.get("model.n_layers", m.n_layers))
    heads = int(fixed.get("model.n_heads", m.n_heads))
    kv = int(fixed.get("model.n_kv_heads", m.n_kv_heads if "model.n_heads" not in fixed else heads))
    seq = int(fixed.get("model.seq_len", m.seq_len))
    gbs = int(fixed["training.global_batch_size"])
    devices = int(fixed.get("hardware.devices_per_node", h.devices_per_node)) * int(fixed["hardware.nodes"])
    device_divisors = divisors(devices)
    tps = _candidates(space.numeric["parallelism.tensor_parallel"],
                      [d for d in device_divisors if heads % d == 0 and kv % d == 0])
    pps = _candidates(space.numeric["parallelism.pipeline_parallel"], [d for d in device_divisors if d <= n_layers])
    cps = _candidates(space.numeric["parallelism.context_parallel"],
                      [d for d in device_divisors if seq % d == 0] if m.attention == "fused" else [1])
    mb_allowed = space.numeric["training.micro_batch_size"]
    vp_allowed = space.numeric["parallelism.virtual_pipeline_stages"]
    dp_allowed = space.derived.get("parallelism.data_parallel")
    accum_allowed = space.derived.get("training.grad_accum_steps")
    for tp, cp, pp in itertools.product(tps, cps, pps):
        mp = tp * cp * pp
        if devices % mp:
            continue
        dp = devices // mp
        if gbs % dp or (dp_allowed is not None and dp not in dp_allowed):
            continue
        local = gbs // dp
        mbs = [b for b in (divisors(local) if mb_allowed is None else [int(x) for x in mb_allowed]) if local % b == 0]
        if accum_allowed is not None:
            mbs = [b for b in mbs if local // b in accum_allowed]
        if vp_allowed is None:
            vps = [1] if pp == 1 else [v for v in range(1, n_layers // pp + 1) if v == 1 or n_layers % (pp * v) == 0]
        else:
            vps = [int(v) for v in vp_allowed if (v == 1 or pp > 1) and pp * v <= n_layers]
        for vp in vps:
            for mb in mbs:
                yield tp, cp, pp, dp, vp, mb, local // mb
