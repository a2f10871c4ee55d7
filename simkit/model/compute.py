"""Compute time of one micro-batch on one device, part by part: a transformer layer (forward, backward,
recompute), the embedding (first pipeline stage) and the final norm, LM head and loss (last stage).

GEMMs go through cost.gemm_time (roofline of the achieved matmul rate), memory-bound ops through the
achieved bandwidth, fused attention through the attention rate. A GEMM's backward is two GEMMs: the
input gradient ((m x n) @ (n x k)) and the weight gradient ((k x m) @ (m x n)); their times are kept
apart because tensor-parallel collectives overlap them differently (parallel/tensor.py).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simkit.hardware.types import Device
from simkit.model import cost
from simkit.model.parallel.tensor import LayerGemmTimes
from simkit.model.precision import PrecisionPolicy
from simkit.model.workload import Kernels, Shape, StepWorkload, transformer_ops

FIRST_STAGE_OPS = ("embedding",)                    # model-level ops on the first pipeline stage
COLUMN_PARALLEL = ("qkv_proj", "mlp_up")            # Megatron column-parallel linears
ROW_PARALLEL = ("out_proj", "mlp_down")             # row-parallel linears


@dataclass
class Part:
    """Seconds of one part of the model for one micro-batch (arrays or scalars)."""

    fwd: object
    bwd: object
    rec: object = 0.0
    kernels: int = 0           # kernels launched by one forward pass of the part


@dataclass
class MicroBatchTimes:
    layer: Part                  # one transformer layer
    first: Part                  # embedding: first pipeline stage only
    last: Part                   # final norm, LM head, loss: last pipeline stage only
    gemms: LayerGemmTimes        # per-layer GEMMs that TP collectives overlap with
    attention_fwd: object        # the attention core of one layer (context-parallel overlap)
    attention_bwd: object
    layer_flops: object          # model FLOPs of one layer (forward + backward, no recompute) on this device
    top_flops: object            # model FLOPs of the LM head (forward + backward) on this device


def _gemm_parts(w: StepWorkload, dev: Device, prec: PrecisionPolicy, ebytes: int, names) -> tuple:
    fwd = dgrad = wgrad = 0.0
    for g in (g for g in w.gemms if g.name in names):
        dtype = prec.dtype_of(g.name)
        fwd = fwd + cost.gemm_time(dev, dtype, g.m, g.n, g.k, g.batch, ebytes)
        dgrad = dgrad + cost.gemm_time(dev, dtype, g.m, g.k, g.n, g.batch, ebytes)
        wgrad = wgrad + cost.gemm_time(dev, dtype, g.k, g.n, g.m, g.batch, ebytes)
    return fwd, dgrad, wgrad


def _memory_parts(w: StepWorkload, dev: Device, names) -> tuple:
    fwd = bwd = 0.0
    for op in (o for o in w.memory_ops if o.name in names):
        t = cost.memory_time(dev, op.bytes_fwd, op.pattern)
        fwd, bwd = fwd + t, bwd + op.bwd_factor * t
    return fwd, bwd


def _selective_recompute(w: StepWorkload, dev: Device, prec: PrecisionPolicy, ebytes: int):
    t = 0.0
    for g in (g for g in w.gemms if g.name in w.selective_recompute):
        t = t + cost.gemm_time(dev, prec.dtype_of(g.name), g.m, g.n, g.k, g.batch, ebytes)
    for op in (o for o in w.memory_ops if o.name in w.selective_recompute):
        t = t + cost.memory_time(dev, op.bytes_fwd, op.pattern)
    return t


def _recompute(w: StepWorkload, device: Device, prec: PrecisionPolicy, ebytes: int, selective: str, every: int,
               layer_fwd, compute_share, bandwidth_share):
    """Recompute time of one layer under selective checkpointing:
    - attention: Megatron's --recompute-granularity selective, the attention core (QK^T, softmax, PV);
      free with fused attention, which recomputes inside its own backward (Korthikanti et al. 2022, Sec. 5);
    - ops: torchtitan's op-level policy saves the outputs of every other matmul and of attention and
      recomputes the rest: half the linear GEMMs and every memory-bound op of the layer (torchtitan
      torchtitan/models/llama3/infra/parallelize.py, _save_list and the 'mm_count % 2' rule);
    - layers: torchtitan's layer policy checkpoints every n-th layer in full: 1/n of the forward."""
    if selective == "layers":
        return layer_fwd / every
    if selective == "ops":
        linear = {g.name for g in w.gemms if g.per_layer and g.has_weight}
        gemm_fwd = _gemm_parts(w, device, prec, ebytes, linear)[0]
        mem_fwd = _memory_parts(w, device, {o.name for o in w.memory_ops if o.per_layer})[0]
        return 0.5 * gemm_fwd / compute_share + mem_fwd / bandwidth_share
    return _selective_recompute(w, device, prec, ebytes) / compute_share


def _names(w: StepWorkload, where: str) -> set:
    ops = list(w.gemms) + list(w.memory_ops)
    if where == "layer":
        return {o.name for o in ops if o.per_layer}
    first = {o.name for o in ops if not o.per_layer and o.name in FIRST_STAGE_OPS}
    return first if where == "first" else {o.name for o in ops if not o.per_layer} - first


def _kernels(w: StepWorkload, names: set) -> int:
    return (sum(1 for g in w.gemms if g.name in names) + sum(o.kernels for o in w.memory_ops if o.name in names)
            + (1 if (w.attention is not None and "qkv_proj" in names) else 0))


def micro_batch_times(*, shape: Shape, prec: PrecisionPolicy, device: Device, mlp: str, causal: bool, attention: str,
                      checkpointing: str, compute_share, bandwidth_share, selective: str = "attention",
                      checkpoint_every: int = 2, cross_entropy: str = "fp32",
                      fp8_recipe: str = "delayed", attention_kernel: str = "default",
                      kernels: Kernels = Kernels()) -> MicroBatchTimes:
    """Times of one micro-batch's parts on one device. compute_share / bandwidth_share: the fraction of a
    host CPU each data-parallel worker gets (cost.host_shares; 1 on a GPU)."""
    eb = prec.activation_bytes
    w = transformer_ops(shape, mlp=mlp, causal=causal, attention=attention, prec=prec, cross_entropy=cross_entropy,
                        fp8_recipe=fp8_recipe, kernels=kernels)
    parts = {}
    for where in ("layer", "first", "last"):
        names = _names(w, where)
        g_fwd, g_dgrad, g_wgrad = _gemm_parts(w, device, prec, eb, names)
        m_fwd, m_bwd = _memory_parts(w, device, names)
        parts[where] = Part(fwd=g_fwd / compute_share + m_fwd / bandwidth_share,
                            bwd=(g_dgrad + g_wgrad) / compute_share + m_bwd / bandwidth_share,
                            kernels=_kernels(w, names))
    a_fwd = a_bwd = 0.0
    if w.attention is not None:
        rate_f, rate_b = cost.attention_rates(device, prec.dtype_of("attention"), shape.local_seq_len, shape.head_dim,
                                              attention_kernel)
        a_fwd = (w.attention.flops_fwd / rate_f + cost.memory_time(device, w.attention.bytes_fwd)) / compute_share
        a_bwd = (w.attention.bwd_flop_factor * w.attention.flops_fwd / rate_b
                 + cost.memory_time(device, 2 * w.attention.bytes_fwd)) / compute_share
    layer = parts["layer"]
    layer.fwd, layer.bwd = layer.fwd + a_fwd, layer.bwd + a_bwd
    if checkpointing == "full":
        layer.rec = layer.fwd
    elif checkpointing == "selective":
        layer.rec = _recompute(w, device, prec, eb, selective, checkpoint_every, layer.fwd, compute_share,
                               bandwidth_share)
    col = [x / compute_share for x in _gemm_parts(w, device, prec, eb, COLUMN_PARALLEL)]
    row = [x / compute_share for x in _gemm_parts(w, device, prec, eb, ROW_PARALLEL)]
    gemms = LayerGemmTimes(column_fwd=col[0], column_dgrad=col[1], column_wgrad=col[2], row_fwd=row[0],
                           row_dgrad=row[1])
    layer_flops = 3.0 * sum(g.flops for g in w.gemms if g.per_layer)
    if w.attention is not None:
        layer_flops = layer_flops + 3.0 * w.attention.flops_fwd     # backward = 2x forward by convention
    top_flops = 3.0 * sum(g.flops for g in w.gemms if not g.per_layer)
    return MicroBatchTimes(layer=layer, first=parts["first"], last=parts["last"], gemms=gemms,
                           attention_fwd=a_fwd, attention_bwd=a_bwd, layer_flops=layer_flops,
                           top_flops=top_flops + 0.0 * np.asarray(layer_flops))
