"""What would have to change for a plan that does not fit in memory: the smallest single changes that fit.

Each candidate changes one thing and keeps the global batch (grad_accum_steps and data_parallel are
derived again): a smaller micro-batch, activation checkpointing, more ZeRO sharding, more tensor or
pipeline parallelism. Candidates that fit are returned with their memory and step time, cheapest in
step time first, one per kind.
"""
from __future__ import annotations

from dataclasses import dataclass

from simkit.core.errors import SimkitError


@dataclass(frozen=True)
class Advice:
    change: str                    # what to set, as --set overrides
    memory_per_device_bytes: float
    step_time_s: float
    kind: str                      # micro-batch | checkpointing | sharding | tensor parallel | pipeline parallel


def _candidates(plan) -> list[tuple[str, list[str]]]:
    t, p, m = plan.training, plan.parallelism, plan.model
    out: list[tuple[str, list[str]]] = []
    mb = t.micro_batch_size
    while mb > 1:
        mb //= 2
        out.append(("micro-batch", [f"training.micro_batch_size={mb}"]))
    for policy in ("selective", "full"):
        if ("none", "selective", "full").index(policy) > ("none", "selective", "full").index(t.activation_checkpointing):
            out.append(("checkpointing", [f"training.activation_checkpointing={policy}"]))
    if p.data_parallel * p.context_parallel > 1:
        out += [("sharding", [f"parallelism.zero_stage={z}"]) for z in (1, 2, 3) if z > p.zero_stage]
    for tp in (2, 4, 8, 16):
        if tp > p.tensor_parallel and m.n_heads % tp == 0 and m.n_kv_heads % tp == 0:
            out.append(("tensor parallel", [f"parallelism.tensor_parallel={tp}"]))
    for pp in (2, 4, 8, 16, 32, 64):
        if pp > p.pipeline_parallel and pp <= m.n_layers:
            out.append(("pipeline parallel", [f"parallelism.pipeline_parallel={pp}",
                                              "parallelism.virtual_pipeline_stages=1"]))
    return out


def fit_advice(plan, *, limit: int = 4) -> list[Advice]:
    """Up to `limit` single changes that make `plan` fit, one per kind, fastest step first."""
    from simkit.model.step import predict
    from simkit.plan import load_plan

    derived = ["parallelism.data_parallel=null", "training.grad_accum_steps=null"]
    raw = dict(plan.raw, hardware=dict(plan.raw.get("hardware") or {}))
    if plan.device.path:          # a calibrated profile, found next to the plan file
        raw["hardware"]["device"] = plan.device.path
    best: dict[str, Advice] = {}
    for kind, sets in _candidates(plan):
        if kind in best:
            continue
        try:
            variant = load_plan(raw, sets + derived)
        except SimkitError:        # the layout does not divide the devices or the batch
            continue
        pred = predict(variant)
        if pred.fits_in_memory:
            best[kind] = Advice(" ".join(f"--set {s}" for s in sets), pred.memory_per_device_bytes,
                                pred.step_time_s, kind)
    return sorted(best.values(), key=lambda a: a.step_time_s)[:limit]
