"""Data parallelism: what is communicated per step and how much of it hides behind compute.

The group is every rank that holds the same weights: data_parallel x context_parallel ranks (context
parallel ranks share weights, so Megatron reduces gradients over its dp-cp group). With pipeline
parallelism each stage reduces its own weights; the numbers here are for one stage.

- DDP (zero_stage 0): one gradient all-reduce per optimizer step (no_sync during accumulation) in
  25 MiB buckets that start as soon as their gradients are ready, overlapping the backward pass of the
  last micro-batch (Li et al. 2020, "PyTorch Distributed", Sec. 3.2.3); the last bucket cannot overlap.
- ZeRO-1 (Megatron's distributed optimizer): reduce-scatter of the gradients once per step, overlapped
  like DDP, and all-gather of the updated weights, bucket by bucket before each bucket's first use in the
  next step's first forward (Megatron-Core --overlap-param-gather, which NeMo, Megatron-Bridge and the
  Megatron-Core README runs enable); only the first bucket waits. ZeRO-2: the reduce-scatter runs every
  micro-step (Rajbhandari et al. 2020, Sec. 5).
- ZeRO-3 / FSDP FULL_SHARD: per micro-step an all-gather of each layer's weights before its forward,
  again before its backward, and a reduce-scatter of its gradients; prefetching overlaps these with
  the neighbouring layer's compute (Zhao et al. 2023, "PyTorch FSDP", Sec. 3.3-3.4).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simkit.model.comm.collectives import Fabric, collective_time
from simkit.model.comm.topology import Group
from simkit.model.memory import DDP_BUCKET_BYTES


@dataclass
class CommTimes:
    total: object      # seconds of communication per optimizer step
    exposed: object    # seconds not hidden behind compute


@dataclass
class StepCompute:
    """Per-device compute times the overlap model needs (seconds)."""

    fwd_layer: object
    bwd_layer: object          # includes recompute when checkpointing
    bwd_micro: object          # the stage's whole backward of one micro-step
    fwd_micro: object = 0.0    # the stage's whole forward of one micro-step


def data_parallel_comm(*, zero_stage: int, params_local, params_per_layer_local, n_layers, accum, group: Group,
                       grad_bytes: int, gather_bytes: int, fabric: Fabric, compute: StepCompute,
                       overlap: bool = True) -> CommTimes:
    """Communication per step of one stage. `overlap=False` for host devices: gloo's reduction threads run
    on the same cores as the backward pass, so nothing hides behind compute."""
    comm = _data_parallel_comm(zero_stage, params_local, params_per_layer_local, n_layers, accum, group,
                               grad_bytes, gather_bytes, fabric, compute)
    return comm if overlap else CommTimes(comm.total, comm.total)


def _data_parallel_comm(zero_stage, params_local, params_per_layer_local, n_layers, accum, group, grad_bytes,
                        gather_bytes, fabric, compute) -> CommTimes:
    if zero_stage >= 3:
        ag = collective_time("all_gather", params_per_layer_local * gather_bytes, group, fabric)
        rs = collective_time("reduce_scatter", params_per_layer_local * gather_bytes, group, fabric)
        per_micro_total = n_layers * (2 * ag + rs)
        exposed_micro = (n_layers * np.maximum(0.0, ag - compute.fwd_layer)
                         + n_layers * np.maximum(0.0, ag + rs - compute.bwd_layer) + ag)
        return CommTimes(accum * per_micro_total, accum * np.minimum(exposed_micro, per_micro_total))
    grads = params_local * grad_bytes
    buckets = np.maximum(1.0, np.ceil(grads / DDP_BUCKET_BYTES))
    if zero_stage == 0:
        total = buckets * collective_time("all_reduce", grads / buckets, group, fabric)
        exposed = np.maximum(total - compute.bwd_micro, total / buckets)
        return CommTimes(total, exposed)
    rs = buckets * collective_time("reduce_scatter", grads / buckets, group, fabric)
    weights = params_local * gather_bytes
    gather_buckets = np.maximum(1.0, np.ceil(weights / DDP_BUCKET_BYTES))
    ag = gather_buckets * collective_time("all_gather", weights / gather_buckets, group, fabric)
    rs_exposed = np.maximum(rs - compute.bwd_micro, rs / buckets)
    ag_exposed = np.maximum(ag - compute.fwd_micro, ag / gather_buckets)
    n_rs = accum if zero_stage == 2 else 1
    return CommTimes(n_rs * rs + ag, n_rs * rs_exposed + ag_exposed)
