"""Memory per device: weights, gradients, optimizer states, activations, buffers.

Model states follow ZeRO (Rajbhandari et al. 2020, Sec. 3): with mixed precision and Adam, 2+2+12
bytes per parameter (fp16 weights and grads, fp32 master/momentum/variance); stage 1 shards the
optimizer states, stage 2 also the gradients, stage 3 also the weights over the data-parallel group.
simkit follows torch.autocast practice instead: weights and grads held in fp32 (4+4 bytes) plus an
autocast low-precision weight copy, so its per-parameter total is 4+4+8(+2).
Activations follow Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
Models"), Sec. 4.1: s*b*h*(34 + 5*a*s/h) bytes per layer in 16-bit without parallelism; the 5as/h
term (attention scores) vanishes with fused attention; full recomputation keeps only 2*s*b*h per layer.
"""
from __future__ import annotations

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

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("weights", "gradients", "optimizer_states", "activations", "buffers")}


def activation_bytes_per_layer(tokens, d_model, n_heads_local, seq_len, batch, act_bytes: int,
                               attention: str, checkpointing: str, tensor_parallel=1):
    """Bytes kept for backward by one transformer layer on one device."""
    full = 17.0 * act_bytes * tokens * d_model / tensor_parallel           # 34*s*b*h at 2 bytes
    scores = 2.5 * act_bytes * batch * n_heads_local * seq_len * seq_len    # 5*a*s^2*b at 2 bytes
    if attention == "eager" and checkpointing == "none":
        full = full + scores
    if checkpointing == "full":
        return act_bytes * tokens * d_model          # the layer input only (2*s*b*h at 2 bytes)
    return full


def memory_per_device(*, params, params_per_layer, n_layers, tokens, d_model, n_heads_local, seq_len, batch,
                      vocab_local, prec: PrecisionPolicy, optimizer: str, zero_stage: int, data_parallel,
                      tensor_parallel, attention: str, checkpointing: str, host: bool) -> MemoryBreakdown:
    local = params / tensor_parallel
    dp = np.asarray(data_parallel, dtype=float)
    weights = local * prec.param_bytes / (dp if zero_stage >= 3 else 1)
    if prec.weight_copy_bytes:
        # autocast copy of the weights in use: all of them, or two gathered layers under ZeRO-3
        copy = (2 * params_per_layer / tensor_parallel if zero_stage >= 3 else local) * prec.weight_copy_bytes
        weights = weights + copy
    grads = local * prec.grad_bytes / (dp if zero_stage >= 2 else 1)
    states = local * OPTIMIZER_STATES[optimizer] * prec.optimizer_state_bytes / (dp if zero_stage >= 1 else 1)
    per_layer = activation_bytes_per_layer(tokens, d_model, n_heads_local, seq_len, batch, prec.activation_bytes,
                                           attention, checkpointing, tensor_parallel)
    acts = n_layers * per_layer
    if checkpointing == "full":   # one layer is re-materialized at a time during backward
        acts = acts + activation_bytes_per_layer(tokens, d_model, n_heads_local, seq_len, batch,
                                                 prec.activation_bytes, attention, "none", tensor_parallel)
    logits = tokens * vocab_local * (prec.activation_bytes + 2 * prec.softmax_bytes)
    acts = acts + logits
    buffers = np.where(dp > 1, 2.0 * DDP_BUCKET_BYTES, 0.0) if zero_stage == 0 else \
        2.0 * params_per_layer / tensor_parallel * prec.activation_bytes
    buffers = buffers + (0.0 if host else FRAMEWORK_OVERHEAD_BYTES)
    return MemoryBreakdown(weights, grads, states, acts, buffers)
