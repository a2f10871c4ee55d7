"""Memory per device: weights, gradients, optimizer states, activations, buffers; the allocated peak, what
the caching allocator reserves on top, and the CUDA context.

Model states per parameter (precision.py): weights `param_bytes`, gradients `grad_bytes`, optimizer
states (2 for Adam/LAMB, 1 for SGD with momentum) x 4 bytes plus an fp32 master copy where the model
holds 16-bit weights. ZeRO (Rajbhandari et al. 2020, Sec. 3) shards the optimizer states (stage 1), also
the gradients (2), also the weights (3) over the ranks that hold the same weights (data x context
parallel). ZeRO-3 / FSDP gathers the weights of the layer being computed and prefetches the next one in
the compute dtype (Zhao et al. 2023, "PyTorch FSDP", Sec. 3.3-3.4: one FSDP unit in flight plus one
prefetched, limit_all_gathers), and holds one layer's unsharded gradient before its reduce-scatter.

Activations are counted op by op, as the kernels save them for backward (`layer_activation_bytes`); for
Megatron-style fused kernels with dropout and materialized attention this reproduces Korthikanti et al.
2022 ("Reducing Activation Recomputation in Large Transformer Models"), Table 2: s*b*h*(34 + 5*a*s/h)
bytes per layer without parallelism, s*b*h*(10 + 24/t + 5*a*s/(h*t)) with tensor parallelism t, and
s*b*h/t*(34 + 5*a*s/h) with sequence parallelism. Context parallelism divides s by CP. With pipeline
parallelism the first stage holds its layers' activations for several micro-batches in flight
(pipeline.in_flight_microbatches); the last stage holds the logits. The busier of the first and the
last stage is reported.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simkit.model.precision import PrecisionPolicy

OPTIMIZER_STATES = {"adamw": 2, "adam": 2, "lamb": 2, "sgd": 1}
DDP_BUCKET_BYTES = 25 * 2**20          # torch DDP bucket_cap_mb default
# The CUDA context with cuBLAS/cuDNN/NCCL workspaces, outside PyTorch's allocator. Assumption: about 1 GiB
# on a datacenter GPU (CUDA 12 lazy module loading keeps the context itself near 0.5 GiB; cuBLAS and
# NCCL buffers add the rest); `simkit calibrate` does not measure it yet.
CUDA_CONTEXT_BYTES = 2**30
# What PyTorch's caching allocator reserves beyond the allocated peak: blocks are rounded up (512 B,
# 2 MiB / 20 MiB segments) and freed blocks of the wrong size stay cached (PyTorch docs, "CUDA
# semantics: memory management"). With the fixed shapes of a training step the cached blocks are reused
# step after step, and expandable segments (PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True) remove
# most of the rest. Assumption, not a measurement: 5 % of the allocated peak.
ALLOCATOR_FRAGMENTATION = 0.05


@dataclass
class MemoryBreakdown:
    weights: object
    gradients: object
    optimizer_states: object
    activations: object
    buffers: object
    reserved_extra: object = 0.0     # caching-allocator blocks reserved beyond the allocated peak
    context: object = 0.0            # CUDA context and library workspaces (outside the allocator)

    KEYS = ("weights", "gradients", "optimizer_states", "activations", "buffers")

    @property
    def allocated(self):
        """The allocated peak (torch.cuda.max_memory_allocated)."""
        return self.weights + self.gradients + self.optimizer_states + self.activations + self.buffers

    @property
    def reserved(self):
        """The reserved peak (torch.cuda.max_memory_reserved), what training logs print as memory."""
        return self.allocated + self.reserved_extra

    @property
    def total(self):
        """What the device must hold: the reserved peak plus the CUDA context."""
        return self.reserved + self.context

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.KEYS}


# ----------------------------------------------------------------------------- activations
@dataclass
class LayerDims:
    """One layer's activation shapes on one device (arrays or scalars)."""

    tokens: object           # micro_batch x seq_len / CP
    batch: object
    seq_len: object          # the full sequence (attention scores)
    d_model: object
    heads: object            # attention heads on this device (n_heads / TP)
    kv_heads: object         # key/value heads on this device
    head_dim: object
    d_ff: object             # MLP width on this device (d_ff / TP)
    tensor_parallel: object = 1
    sequence_parallel: bool = False


@dataclass(frozen=True)
class ActivationPolicy:
    act_bytes: int                  # activations between ops (2 with 16-bit compute, 4 in fp32)
    attention: str = "fused"        # fused (flash/SDPA: q, k, v, out, logsumexp) | eager (scores materialized)
    implementation: str = "fused"   # fused kernels (Megatron/TE, flash-attn) | eager (PyTorch ops under autocast)
    mlp: str = "gelu"
    dropout: bool = False           # dropout masks are kept only when dropout > 0
    checkpointing: str = "none"     # none | selective | selective-ops | selective-layers-N | full
    fp8: bool = False               # fp8 GEMMs (TransformerEngine): linear layers keep their inputs in fp8
    norm: str = "layernorm"
    positions: str = "none"
    predicted_fraction: float = 1.0
    autocast: bool = True           # eager ops on fp32 weights: fp32 residual stream and norms (workload.Kernels)

    @property
    def linear_input_bytes(self) -> int:
        """TransformerEngine's fp8 Linear casts its input to fp8 for the GEMM and keeps that fp8 copy for the
        weight gradient (transformer_engine/pytorch/module/linear.py); other linears keep the compute dtype."""
        return 1 if self.fp8 else self.act_bytes


def _norm_input(d: LayerDims, p: ActivationPolicy):
    """What a LayerNorm keeps: its input (fp32 under autocast, which upcasts norms; the compute dtype in a
    fused kernel) and fp32 mean and 1/std per token. Sharded over TP with SP, replicated without."""
    shard = d.tensor_parallel if d.sequence_parallel else 1.0
    width = 4 if (p.implementation == "eager" and p.autocast) else p.act_bytes
    if p.implementation == "eager" and p.norm == "rmsnorm":
        width = 8      # eager RMSNorm keeps the fp32 input and the fp32 normalized output (for the weight's mul)
    return (width * d.tokens * d.d_model + 8 * d.tokens) / shard


def _linear_input(d: LayerDims, p: ActivationPolicy):
    """The input a column-parallel linear keeps (with SP Megatron keeps the sharded input and re-gathers
    it in backward)."""
    return p.linear_input_bytes * d.tokens * d.d_model / (d.tensor_parallel if d.sequence_parallel else 1.0)


def _attention(d: LayerDims, p: ActivationPolicy, core_recomputed: bool):
    """Q, K, V, the attention output and what the core keeps: the log-sum-exp (fused; FlashAttention,
    Dao et al. 2022, Sec. 3.1) or the score-sized softmax output, dropout mask and output (eager)."""
    a = p.act_bytes
    qkv = a * d.tokens * (d.heads + 2 * d.kv_heads) * d.head_dim
    out = a * d.tokens * d.heads * d.head_dim
    # PyTorch's SDPA keeps its output and the out-projection keeps a reshaped copy; Megatron/TE keep one,
    # plus the projection's fp8 copy with fp8 GEMMs
    if p.implementation == "eager" and p.attention == "fused":
        out = 2 * out
    elif p.fp8:
        out = out * (1 + 1 / a)
    if p.positions == "rope" and p.implementation == "eager":
        # rotate-half RoPE keeps q and k before the rotation and their rotated halves for the sin product
        qkv = qkv + 2 * a * d.tokens * (d.heads + d.kv_heads) * d.head_dim
    if p.attention == "fused":
        return qkv + out + 4 * d.tokens * d.heads
    if core_recomputed:                  # Megatron selective: the attention core is recomputed in backward
        return qkv + out
    # per score element: softmax output in fp32 plus its cast (autocast) or in the compute dtype (fused
    # scale-mask-softmax); with dropout a 1-byte mask and the dropped-out probabilities
    per_score = (4 + a) if p.implementation == "eager" else a
    if p.dropout:
        per_score += 1 + a
    scores = d.batch * d.heads * d.seq_len * d.seq_len
    return qkv + out + per_score * scores


def _mlp(d: LayerDims, p: ActivationPolicy):
    """GELU keeps its input and the down-projection its output; unfused SwiGLU keeps the gate, silu(gate)
    and the up branch (silu and mul each save their inputs) plus the product, a fused SwiGLU kernel the
    up-projection output and the product (Megatron-Core bias_swiglu_impl recomputes silu)."""
    a, f, down = p.act_bytes, d.d_ff, p.linear_input_bytes
    if p.mlp == "swiglu":
        return d.tokens * f * (4 * a if p.implementation == "eager" else 2 * a + down)
    return d.tokens * f * (a + down)


def layer_activation_bytes(d: LayerDims, p: ActivationPolicy):
    """Bytes one transformer layer keeps for backward on one device under the checkpointing policy."""
    shard = d.tensor_parallel if d.sequence_parallel else 1.0
    layer_input = p.act_bytes * d.tokens * d.d_model / shard
    if p.checkpointing == "full":
        return layer_input                    # the layer input only (Korthikanti et al. 2022, Sec. 4.3)
    masks = 2 * d.tokens * d.d_model / shard if p.dropout else 0.0    # after attention and after the MLP
    full = (2 * _norm_input(d, p) + 2 * _linear_input(d, p) + _attention(d, p, p.checkpointing == "selective")
            + _mlp(d, p) + masks)
    if p.checkpointing.startswith("selective-layers-"):
        n = float(p.checkpointing.rsplit("-", 1)[1])   # every n-th layer keeps only its input
        return (1 - 1 / n) * full + layer_input / n
    if p.checkpointing == "selective-ops":
        # torchtitan's op-level policy keeps every other matmul output and the attention output; the norms,
        # activations and the other matmul outputs are recomputed: the layer input plus about half
        return layer_input + 0.5 * (full - 2 * _norm_input(d, p))
    return full


def activation_bytes_per_layer(tokens, d_model, n_heads_local, seq_len, batch, act_bytes: int, attention: str,
                               checkpointing: str, tensor_parallel=1, sequence_parallel=False, dropout=True):
    """Korthikanti et al. 2022's accounting (Megatron fused kernels, GELU MLP with d_ff = 4 d_model, heads
    of d_model / n_heads): bytes kept by one layer. Kept for the known-answer tests."""
    t = np.asarray(tensor_parallel, dtype=float)
    heads = np.asarray(n_heads_local, dtype=float)
    d = LayerDims(tokens=tokens, batch=batch, seq_len=seq_len, d_model=d_model, heads=heads, kv_heads=heads,
                  head_dim=d_model / (heads * t), d_ff=4 * d_model / t, tensor_parallel=t,
                  sequence_parallel=sequence_parallel)
    p = ActivationPolicy(act_bytes=act_bytes, attention=attention, implementation="fused", mlp="gelu",
                         dropout=dropout, checkpointing=checkpointing)
    return layer_activation_bytes(d, p)


def logits_bytes(tokens, vocab_local, act_bytes: int, cross_entropy: str):
    """What the loss keeps at its peak, at the start of backward, per device:
    - fused: the logits in the compute dtype, the gradient written into them in place, an fp32
      log-sum-exp per token (flash-attn's cross_entropy, TransformerEngine / Megatron fused CE, Liger);
    - fp32: logits cast to fp32, the fp32 log-softmax kept, and in backward its gradient and the input
      gradient both fp32 (F.cross_entropy under autocast or on `.float()` logits): 12 bytes per logit,
      10 when the compute dtype's cast is freed first."""
    if cross_entropy == "fused":
        return tokens * vocab_local * act_bytes + 4 * tokens
    return tokens * vocab_local * (act_bytes + 2 * 4)


# ----------------------------------------------------------------------------- one stage
@dataclass
class StageMemoryInputs:
    """What one pipeline stage holds (arrays or scalars): its parameters on this device (TP shard) and
    how many layers' activations it keeps."""

    params_local: object
    layers: object
    in_flight: object            # micro-batches whose activations are held at the peak
    holds_logits: object         # 1.0 on the last stage, else 0.0


# fp8 GEMMs on Hopper need each fp8 weight in both layouts (the forward GEMM and the data-gradient GEMM):
# TransformerEngine keeps the transpose beside the fp8 weight through the step (Float8Tensor's cached
# transpose, transformer_engine/pytorch/tensor/float8_tensor.py): 1 byte per linear weight.
FP8_WEIGHT_CACHE_BYTES = 1


def model_states(*, params_local, params_per_layer_local, prec: PrecisionPolicy, optimizer: str, zero_stage: int,
                 shard_group, grads_at_peak, linear_params_local=0.0) -> tuple:
    """(weights, gradients, optimizer states incl. the fp32 master, ZeRO-3 gathered buffers) in bytes."""
    dp = np.asarray(shard_group, dtype=float)
    weights = params_local * prec.param_bytes / (dp if zero_stage >= 3 else 1)
    if prec.weight_copy_bytes and zero_stage < 3:
        weights = weights + params_local * prec.weight_copy_bytes     # autocast's compute-dtype copy
    if prec.precision == "fp8":
        weights = weights + linear_params_local * FP8_WEIGHT_CACHE_BYTES
    grads = grads_at_peak * params_local * prec.grad_bytes / (dp if zero_stage >= 2 else 1)
    per_param = OPTIMIZER_STATES[optimizer] * prec.optimizer_state_bytes + prec.master_bytes
    states = params_local * per_param / (dp if zero_stage >= 1 else 1)
    if zero_stage >= 3:   # the gathered layer, the prefetched one, and one layer's unsharded gradient
        gathered = (2 + grads_at_peak) * params_per_layer_local * prec.activation_bytes
    elif zero_stage == 0 and prec.master_weights == "model":
        # torch DistributedDataParallel allocates its communication buckets (bucket_cap_mb each) for every
        # parameter at construction, a flat copy of all the gradients that lives as long as the model:
        # "gradient_as_bucket_view ... the saved memory size will be equal to the total gradients size"
        # (torch.nn.parallel.DistributedDataParallel docs). Measured: 20.0 MiB beside 20.0 MiB of fp32
        # weights for a 5.2M-parameter model on 2 gloo ranks (examples/validation/07, torch.profiler). Megatron's
        # DDP (optimizer-side master weights) reduces from its contiguous main-grad buffer instead: no copy.
        gathered = np.where(dp > 1, params_local * prec.grad_bytes, 0.0)
    else:
        gathered = 0.0 * dp
    return weights, grads, states, gathered


@dataclass
class ActivationTerms:
    """Per micro-batch on one device: what one layer keeps, what a checkpointed layer re-materializes in
    backward (0 without checkpointing), and what the loss keeps (on the last stage)."""

    layer: object
    rematerialized: object
    logits: object


def activation_terms(dims: LayerDims, vocab_local, act: ActivationPolicy, cross_entropy: str) -> ActivationTerms:
    layer = layer_activation_bytes(dims, act)
    again = 0.0
    if act.checkpointing == "full" or act.checkpointing.startswith("selective-layers"):
        # one checkpointed layer is re-materialized at a time during backward
        from dataclasses import replace

        again = layer_activation_bytes(dims, replace(act, checkpointing="none"))
    logits = logits_bytes(dims.tokens * act.predicted_fraction, vocab_local, act.act_bytes, cross_entropy)
    return ActivationTerms(layer, again, logits)


def memory_per_device(*, stage: StageMemoryInputs, params_per_layer_local, dims: LayerDims, vocab_local,
                      prec: PrecisionPolicy, act: ActivationPolicy, optimizer: str, zero_stage: int, shard_group,
                      cross_entropy: str, grads_at_peak, host: bool,
                      terms: ActivationTerms | None = None) -> MemoryBreakdown:
    """Memory of one device of `stage`; `shard_group` = the ranks ZeRO shards over (data x context).
    `terms`: activation_terms(dims, vocab_local, act, cross_entropy) when the caller has them."""
    weights, grads, states, buffers = model_states(
        params_local=stage.params_local, params_per_layer_local=params_per_layer_local, prec=prec,
        optimizer=optimizer, zero_stage=zero_stage, shard_group=shard_group, grads_at_peak=grads_at_peak,
        linear_params_local=stage.layers * params_per_layer_local / (shard_group if zero_stage >= 3 else 1))
    if terms is None:
        terms = activation_terms(dims, vocab_local, act, cross_entropy)
    acts = stage.layers * stage.in_flight * terms.layer
    if act.checkpointing == "full" or act.checkpointing.startswith("selective-layers"):
        acts = acts + terms.rematerialized
    acts = acts + stage.holds_logits * terms.logits
    allocated = weights + grads + states + acts + buffers
    extra = 0.0 if host else ALLOCATOR_FRAGMENTATION * allocated
    return MemoryBreakdown(weights, grads, states, acts, buffers, extra, 0.0 if host else CUDA_CONTEXT_BYTES)


def busiest(a: MemoryBreakdown, b: MemoryBreakdown) -> MemoryBreakdown:
    """Elementwise, the breakdown of whichever of two stages needs more memory in total."""
    pick = a.total >= b.total
    keys = MemoryBreakdown.KEYS + ("reserved_extra", "context")
    return MemoryBreakdown(*(np.where(pick, getattr(a, k), getattr(b, k)) for k in keys))
