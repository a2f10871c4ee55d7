"""A plan swept over node counts: throughput and scaling efficiency per number of devices.

`scaling_table(plan_path, [1, 2, 4, 8])` predicts the plan on each node count through the sweep engine, so
`data_parallel` and `grad_accum_steps` are re-derived for every count while the model-parallel layout
stays as the plan has it. The global batch stays as the plan has it (strong scaling: fewer micro-batches
per step on more devices) unless `scale_batch` is set (weak scaling: the global batch grows with the
nodes, the micro-batches per step stay). Scaling efficiency is throughput per device relative to the
smallest valid node count that fits in memory (the smallest valid one when none fits): 1.0 is linear.
Pure: no printing."""
from __future__ import annotations

import math
from typing import Sequence

from simkit import plan as plan_mod
from simkit.core.errors import SimkitError

COLUMNS = ("nodes", "devices", "global_batch_size", "tokens_per_s", "step_time_s", "mfu", "fits_in_memory",
           "ideal_tokens_per_s", "scaling_efficiency", "reason")


def parse_nodes(text: str) -> list[int]:
    """'1,2,4,8' -> [1, 2, 4, 8] (sorted, unique, positive)."""
    try:
        nodes = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise SimkitError(f"expected node counts like 1,2,4,8, got {text!r}", key="--nodes") from None
    if not nodes or nodes[0] < 1:
        raise SimkitError(f"expected positive node counts like 1,2,4,8, got {text!r}", key="--nodes")
    return nodes


def default_nodes(plan_nodes: int) -> list[int]:
    """Powers of two from 1 to 8x the plan's node count (at least 8), and the plan's own count."""
    top = max(8, 8 * plan_nodes)
    return sorted({2**i for i in range(int(math.log2(top)) + 1)} | {plan_nodes})


def scaling_table(source, nodes: Sequence[int], overrides: tuple[str, ...] = (), *, scale_batch: bool = False):
    """One row per node count (pandas DataFrame with COLUMNS); invalid counts keep their `reason`."""
    import pandas as pd

    from simkit.search.sweep import run_sweep

    base = plan_mod.load_plan(source, overrides)
    batch, plan_nodes = base.training.global_batch_size, base.hw.nodes
    frames = []
    for n in nodes:
        varies = [f"hardware.nodes={n}"]
        if scale_batch:   # varied, not --set: the plan's own grad_accum_steps and data_parallel are re-derived
            if (batch * n) % plan_nodes:
                frames.append(pd.DataFrame({"hardware.nodes": [n], "reason": [
                    f"global batch {batch} x {n} / {plan_nodes} nodes is not a whole number of sequences"]}))
                continue
            varies.append(f"training.global_batch_size={batch * n // plan_nodes}")
        frames.append(run_sweep(source, varies, tuple(overrides)))
    df = pd.concat(frames, ignore_index=True).rename(columns={"hardware.nodes": "nodes"})
    df["devices"] = df["nodes"] * base.hw.devices_per_node
    df["global_batch_size"] = [_batch(batch, n, plan_nodes, scale_batch) for n in df["nodes"]]
    for key in ("tokens_per_s", "step_time_s", "mfu"):
        df[key] = df[key].astype(float) if key in df else math.nan
    df["fits_in_memory"] = df["fits_in_memory"] if "fits_in_memory" in df else None
    valid = df[df["reason"] == ""]
    fitting = valid[valid["fits_in_memory"] == True]  # noqa: E712 (an object column: True, False or NaN)
    base_row = fitting.iloc[0] if len(fitting) else valid.iloc[0] if len(valid) else None
    if base_row is not None:
        per_device = base_row["tokens_per_s"] / base_row["devices"]
        df["ideal_tokens_per_s"] = per_device * df["devices"]
        df["scaling_efficiency"] = df["tokens_per_s"] / df["ideal_tokens_per_s"]
    else:
        df["ideal_tokens_per_s"] = df["scaling_efficiency"] = math.nan
    return df[list(COLUMNS)]


def _batch(batch: int, nodes: int, plan_nodes: int, scale: bool) -> int | None:
    if not scale:
        return batch
    return batch * nodes // plan_nodes if (batch * nodes) % plan_nodes == 0 else None
