"""Tensor parallelism (Megatron-LM, Shoeybi et al. 2019): the activation collectives of one layer and how
much of them the GEMMs hide.

Each transformer layer has two column-parallel linears (QKV, MLP up) followed by a row-parallel one
(attention output, MLP down). With S = micro_batch x (seq_len / CP) x d_model x activation bytes:

- without sequence parallelism: forward all-reduces S after each row-parallel linear (2 per layer);
  backward all-reduces the input gradient of each column-parallel linear (2 per layer);
- with sequence parallelism (Korthikanti et al. 2022, Sec. 4.2.2) every all-reduce becomes an all-gather
  before the column-parallel linear and a reduce-scatter after the row-parallel one (same bytes on the wire);
  backward all-gathers the output gradient of each row-parallel linear, re-gathers the input of each
  column-parallel linear for its weight gradient, and reduce-scatters its input gradient.

What overlaps without `tp_comm_overlap`: Megatron launches the backward collectives of a column-parallel
linear asynchronously (megatron/core/tensor_parallel/layers.py,
LinearWithGradAccumulationAndAsyncCommunication): the input re-gather runs during the data-gradient GEMM
and the input-gradient all-reduce / reduce-scatter during the weight-gradient GEMM. Everything else is on
the critical path. With `tp_comm_overlap` (Megatron/TransformerEngine userbuffers, torch async TP) every
collective is split into TP chunks that overlap the neighbouring GEMM's chunks (Wang et al. 2023,
"Overlap communication with dependent computation via decomposition"), leaving the larger of what the
GEMM cannot cover and one chunk exposed. Full activation recomputation repeats the forward collectives.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simkit.model.comm.collectives import Fabric, collective_time
from simkit.model.comm.topology import Group


@dataclass
class LayerGemmTimes:
    """Per-layer GEMM times one TP collective can hide behind (seconds, arrays or scalars)."""

    column_fwd: object       # QKV + MLP-up forward (what precedes a row-parallel linear's output)
    column_dgrad: object     # their input-gradient GEMMs
    column_wgrad: object     # their weight-gradient GEMMs
    row_fwd: object          # attention-output + MLP-down forward
    row_dgrad: object


@dataclass
class TensorComm:
    """TP communication of one layer for one micro-batch (seconds)."""

    fwd_total: object
    fwd_exposed: object
    bwd_total: object
    bwd_exposed: object


def _hidden(comm, gemm, overlap: bool, tp):
    """Exposed part of a collective that runs beside `gemm` (None: nothing runs beside it)."""
    if overlap:
        return np.maximum(comm - gemm, comm / np.maximum(tp, 1.0))
    return comm if gemm is None else np.maximum(comm - gemm, 0.0)


def layer_comm(*, activation_bytes, group: Group, fabric: Fabric, sequence_parallel: bool, overlap: bool,
               gemms: LayerGemmTimes) -> TensorComm:
    """TP collectives of one layer: totals and exposed parts, forward and backward."""
    tp = np.asarray(group.size, dtype=float)
    if sequence_parallel:
        ag = collective_time("all_gather", activation_bytes, group, fabric)
        rs = collective_time("reduce_scatter", activation_bytes, group, fabric)
        fwd_total = 2 * ag + 2 * rs
        # forward: AG before each column-parallel GEMM, RS after each row-parallel GEMM
        fwd_exposed = (_hidden(2 * ag, gemms.column_fwd if overlap else None, overlap, tp)
                       + _hidden(2 * rs, gemms.row_fwd if overlap else None, overlap, tp))
        # backward: AG of the row-parallel output gradient (before its dgrad), input re-gather beside the
        # column dgrad, RS of the column input gradient beside its wgrad
        bwd_total = 4 * ag + 2 * rs
        bwd_exposed = (_hidden(2 * ag, gemms.row_dgrad if overlap else None, overlap, tp)
                       + _hidden(2 * ag, gemms.column_dgrad, overlap, tp)
                       + _hidden(2 * rs, gemms.column_wgrad, overlap, tp))
    else:
        ar = collective_time("all_reduce", activation_bytes, group, fabric)
        fwd_total = 2 * ar
        fwd_exposed = _hidden(2 * ar, gemms.row_fwd if overlap else None, overlap, tp)
        bwd_total = 2 * ar
        bwd_exposed = _hidden(2 * ar, gemms.column_wgrad, overlap, tp)
    zero = np.asarray(tp) <= 1
    return TensorComm(*(np.where(zero, 0.0, x) for x in (fwd_total, fwd_exposed, bwd_total, bwd_exposed)))


def model_level_comm(*, activation_bytes, group: Group, fabric: Fabric, sequence_parallel: bool):
    """Per micro-batch, outside the layers: the vocab-parallel embedding's all-reduce (a reduce-scatter with
    SP) on the first stage and the LM head's input all-gather (SP) / gradient all-reduce on the last; each
    once forward and once backward. Returns (first-stage seconds, last-stage seconds)."""
    if sequence_parallel:
        first = collective_time("reduce_scatter", activation_bytes, group, fabric) + \
            collective_time("all_gather", activation_bytes, group, fabric)
        last = 2 * collective_time("all_gather", activation_bytes, group, fabric) + \
            collective_time("reduce_scatter", activation_bytes, group, fabric)
    else:
        first = collective_time("all_reduce", activation_bytes, group, fabric)
        last = collective_time("all_reduce", activation_bytes, group, fabric)
    return first, last
