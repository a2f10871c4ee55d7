"""Memory per device: weights, gradients, optimizer states, activations, buffers.

Model states follow ZeRO (Rajbhandari et al. 2020, Sec. 3): with mixed precision and Adam, 2+2+12
bytes per parameter (fp16 weights and grads, fp32 master/momentum/variance); stage 1 shards the
optimizer states, stage 2 also the gradients, stage 3 also the weights over the data-parallel group.
simkit follows torch.autocast practice instead: weights and grads held in fp32 (4+4 bytes) plus an
autocast low-precision weight copy, so its per-parameter total is 4+4+8(+2).
Activations follow Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
Models"), Table 2, per layer in 16-bit: s*b*h*(34 + 5*a*s/h) without parallelism; with tensor
parallelism t, s*b*h*(10 + 24/t + 5*a*s/(h*t)) (norms and dropouts replicated), and with sequence
parallelism s*b*h/t*(34 + 5*a*s/h); the 5as/h term (attention scores) vanishes with fused attention and
with selective recomputation; full recomputation keeps only the layer input, 2*s*b*h (2*s*b*h/t with SP).
Context parallelism divides s by CP. With pipeline parallelism the first stage holds its layers'
activations for several micro-batches in flight (pipeline.in_flight_microbatches); the last stage holds
the logits. The busier of the first and the last stage is reported.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from simkit.model.precision import PrecisionPolicy

OPTIMIZER_STATES = {"adamw": 2, "adam": 2, "lamb": 2, "sgd": 1}
DDP_BUCKET_BYTES = 25 * 2**20          # torch DDP bucket_cap_mb default
# CUDA context, cuBLAS/cuDNN workspaces and allocator fragmentation. Assumption: ~1 GiB on a GPU.
FRAMEWORK_OVERHEAD_BYTES = 2**30


@dataclass
class MemoryBreakdown:
    weights: object
    gradients: object
    optimizer_states: object
    activations: object
    buffers: object

    @property
    def total(self):
        return self.weights + self.gradients + self.optimizer_states + self.activations + self.buffers

    KEYS = ("weights", "gradients", "optimizer_states", "activations", "buffers")

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.KEYS}


def activation_bytes_per_layer(tokens, d_model, n_heads_local, seq_len, batch, act_bytes: int,
                               attention: str, checkpointing: str, tensor_parallel=1, sequence_parallel=False):
    """Bytes kept for backward by one transformer layer on one device; `tokens` = batch x seq_len / CP."""
    t = np.asarray(tensor_parallel, dtype=float)
    if sequence_parallel:
        full = 17.0 * act_bytes * tokens * d_model / t                 # 34*s*b*h/t at 2 bytes
    else:
        full = act_bytes * tokens * d_model * (5.0 + 12.0 / t)          # s*b*h*(10 + 24/t) at 2 bytes
    scores = 2.5 * act_bytes * batch * n_heads_local * seq_len * seq_len    # 5*a*s^2*b/t at 2 bytes
    if attention == "eager" and checkpointing == "none":
        full = full + scores
    layer_input = act_bytes * tokens * d_model / (t if sequence_parallel else 1.0)
    if checkpointing == "full":
        return layer_input        # the layer input only (2*s*b*h at 2 bytes), sharded over TP with SP
    if checkpointing.startswith("selective-layers-"):
        # every n-th layer keeps only its input; the others keep everything (attention scores included)
        n = float(checkpointing.rsplit("-", 1)[1])
        kept = full + (scores if attention == "eager" else 0.0)
        return (1 - 1 / n) * kept + layer_input / n
    if checkpointing == "selective-ops":
        # approximation: the layer input plus half of what the layer keeps (every other matmul's output is
        # saved, the elementwise outputs are recomputed)
        return layer_input + 0.5 * full
    return full


@dataclass
class StageMemoryInputs:
    """What one pipeline stage holds (arrays or scalars): its parameters on this device (TP shard) and
    how many layers' activations it keeps."""

    params_local: object
    layers: object
    in_flight: object            # micro-batches whose activations are held at the peak
    holds_logits: object         # 1.0 on the last stage, else 0.0


def memory_per_device(*, stage: StageMemoryInputs, params_per_layer_local, tokens, d_model, n_heads_local,
                      seq_len, batch, vocab_local, prec: PrecisionPolicy, optimizer: str, zero_stage: int,
                      shard_group, tensor_parallel, sequence_parallel: bool, attention: str, checkpointing: str,
                      host: bool) -> MemoryBreakdown:
    """Memory of one device of `stage`; `shard_group` = the ranks ZeRO shards over (data x context)."""
    local = stage.params_local
    dp = np.asarray(shard_group, dtype=float)
    weights = local * prec.param_bytes / (dp if zero_stage >= 3 else 1)
    if prec.weight_copy_bytes:
        # autocast copy of the weights in use: all of them, or two gathered layers under ZeRO-3
        copy = (2 * params_per_layer_local if zero_stage >= 3 else local) * prec.weight_copy_bytes
        weights = weights + copy
    grads = local * prec.grad_bytes / (dp if zero_stage >= 2 else 1)
    states = local * OPTIMIZER_STATES[optimizer] * prec.optimizer_state_bytes / (dp if zero_stage >= 1 else 1)
    layer = functools.partial(activation_bytes_per_layer, tokens, d_model, n_heads_local, seq_len, batch,
                              prec.activation_bytes, attention, tensor_parallel=tensor_parallel,
                              sequence_parallel=sequence_parallel)
    acts = stage.layers * stage.in_flight * layer(checkpointing)
    if checkpointing == "full" or checkpointing.startswith("selective-layers"):
        # one checkpointed layer is re-materialized at a time during backward
        acts = acts + layer("none")
    logits = tokens * vocab_local * (prec.activation_bytes + 2 * prec.softmax_bytes)
    acts = acts + stage.holds_logits * logits
    buffers = np.where(dp > 1, 2.0 * DDP_BUCKET_BYTES, 0.0) if zero_stage == 0 else \
        2.0 * params_per_layer_local * prec.activation_bytes
    buffers = buffers + (0.0 if host else FRAMEWORK_OVERHEAD_BYTES)
    return MemoryBreakdown(weights, grads, states, acts, buffers)


def busiest(a: MemoryBreakdown, b: MemoryBreakdown) -> MemoryBreakdown:
    """Elementwise, the breakdown of whichever of two stages needs more memory in total."""
    pick = a.total >= b.total
    return MemoryBreakdown(*(np.where(pick, getattr(a, k), getattr(b, k)) for k in MemoryBreakdown.KEYS))
