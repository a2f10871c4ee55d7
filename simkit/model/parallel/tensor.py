"""Tensor parallelism (Megatron, Shoeybi et al. 2019): two all-reduces of the activations per layer in
forward and two in backward, on the critical path."""
from __future__ import annotations

from simkit.model.comm.collectives import Fabric, collective_time
from simkit.model.parallel.data import CommTimes


def tensor_parallel_comm(*, tokens, d_model, n_layers, accum, tp, act_bytes: int, fabric: Fabric) -> CommTimes:
    per_layer = 4 * collective_time("all_reduce", tokens * d_model * act_bytes, tp, fabric)
    total = accum * n_layers * per_layer
    return CommTimes(total, total)
