"""The operations of one transformer training micro-step: FLOPs, bytes moved and GEMM shapes.

All numeric fields accept numpy arrays, so a sweep evaluates many configurations at once.
GEMM FLOPs are 2*m*n*k (one multiply-add = 2 FLOP); a GEMM's backward is two GEMMs of the same
FLOPs (input gradient and weight gradient), see Narayanan et al. 2021 ("Efficient Large-Scale
Language Model Training on GPU Clusters"), Sec. 5.1 / Appendix: 72*B*s*l*h^2*(1 + s/6h + V/12lh)
for a GPT step with recomputation, of which the matmul part is reproduced here op by op.
"""
from __future__ import annotations

from dataclasses import dataclass, field


from simkit.model.precision import PrecisionPolicy


@dataclass
class Shape:
    """Numbers describing one device's share of a micro-step (arrays or scalars)."""

    batch: object          # micro_batch_size (sequences per device per micro-step)
    seq_len: object
    d_model: object
    n_heads: object
    n_kv_heads: object
    d_ff: object
    vocab_size: object
    n_layers: object
    tensor_parallel: object = 1
    context_parallel: object = 1     # the sequence is split over this many ranks (ring attention)
    sequence_parallel: bool = False  # Megatron SP: norms, dropout and residuals sharded over the TP group

    @property
    def tokens(self):
        """Tokens of one micro-batch on one device (the context-parallel share of the sequence)."""
        return self.batch * self.seq_len / self.context_parallel

    @property
    def local_seq_len(self):
        return self.seq_len / self.context_parallel

    @property
    def head_dim(self):
        return self.d_model // self.n_heads


@dataclass
class Gemm:
    name: str
    m: object
    n: object
    k: object
    batch: object = 1            # batched matmul count (eager attention)
    per_layer: bool = True
    has_weight: bool = True      # backward = input grad + weight grad (else: two input grads)

    @property
    def flops(self):
        return 2.0 * self.m * self.n * self.k * self.batch


@dataclass
class MemoryOp:
    name: str
    bytes_fwd: object            # bytes moved by the forward kernel(s)
    bwd_factor: float = 2.0      # backward reads the output grad and saved input, writes the input grad
    kernels: int = 1
    per_layer: bool = True
    pattern: str = "triad"       # the calibrated bandwidth pattern that times this kind of kernel


@dataclass
class Attention:
    """Fused (flash) attention core: QK^T, softmax and PV in one kernel."""

    flops_fwd: object
    bytes_fwd: object
    seq_len: object
    causal: bool
    bwd_flop_factor: float = 2.5   # FlashAttention-2 backward does 5 matmuls vs 2 forward (Dao 2023, Sec. 3.1.2)


@dataclass
class StepWorkload:
    gemms: list[Gemm] = field(default_factory=list)
    memory_ops: list[MemoryOp] = field(default_factory=list)
    attention: Attention | None = None
    selective_recompute: list[str] = field(default_factory=list)   # names recomputed under 'selective'


@dataclass(frozen=True)
class Kernels:
    """How the elementwise work of a layer runs: `fused` kernels (Megatron-Core / TransformerEngine, apex,
    torch.compile) make one pass per op in the compute dtype; `eager` PyTorch ops under autocast keep the
    residual stream in fp32 (the embedding's output is fp32 and autocast adds the bf16 branch outputs to
    it), run LayerNorm in fp32 and cast its output for the next matmul, write RMSNorm as six elementwise
    kernels on an fp32 copy (HF transformers' and torchtitan's LlamaRMSNorm), RoPE as rotate-half
    arithmetic (four kernels) and SwiGLU as silu then mul."""

    kind: str = "fused"
    norm: str = "layernorm"
    positions: str = "none"
    dropout: bool = False
    predicted_fraction: float = 1.0
    autocast: bool = True
    """Eager ops under torch.autocast on fp32 weights (DDP, single device): the embedding's output and so the
    residual stream are fp32 and autocast runs LayerNorm in fp32. False where the weights are 16-bit while
    they compute: FSDP's mixed precision gathers them in bf16, apex O2 and Megatron keep a 16-bit model."""

    def dropout_bytes(self, a: int) -> float:
        """Bytes per element one dropout moves (forward; the backward reads the mask and the gradient and
        writes one: as many): an eager F.dropout reads and writes the tensor and writes a 1-byte mask; a
        fused kernel (Megatron's bias-dropout-add) only adds the mask to the residual add's pass."""
        if not self.dropout:
            return 0.0
        return 2 * a + 1 if self.kind == "eager" else 1.0

    def residual_bytes(self, a: int) -> int:
        return 4 if (self.kind == "eager" and self.autocast) else a

    def norm_bytes(self, a: int) -> float:
        """Bytes per element one norm's forward moves."""
        if self.kind == "fused":
            return 2 * a
        r = self.residual_bytes(a)
        if self.norm == "rmsnorm":   # .float(), pow, mean, x * rsqrt, .to(dtype), * weight
            return (r + 4) + (4 + 4) + 4 + (4 + 4) + (4 + a) + (a + a)
        if not self.autocast:        # a 16-bit model's LayerNorm kernel: read and write in the compute dtype
            return 2 * a
        return (r + 4) + (4 + a)     # F.layer_norm in fp32, then the cast for the next matmul

    def rope_bytes(self, a: int) -> float:
        """Bytes per element of q and k the rotary embedding moves (forward)."""
        if self.positions != "rope":
            return 0.0
        return 2 * a if self.kind == "fused" else 10 * a   # q*cos, rotate_half (neg, cat), *sin, add

    def swiglu_bytes(self, a: int) -> float:
        """Bytes per element of d_ff the SwiGLU activation moves (forward)."""
        return 3 * a if self.kind == "fused" else 5 * a    # silu: read, write; mul: read 2, write


def transformer_ops(s: Shape, *, mlp: str, causal: bool, attention: str, prec: PrecisionPolicy,
                    cross_entropy: str = "fp32", fp8_recipe: str = "delayed", kernels: Kernels = Kernels()
                    ) -> StepWorkload:
    """Ops of one micro-step on one device; per_layer ops repeat n_layers times.

    Tensor parallelism splits the heads and the MLP width over `tensor_parallel` ranks (Megatron's
    column/row split); context parallelism gives each rank seq_len / context_parallel tokens, and its
    share of causal attention is balanced (Megatron-Core splits the sequence into 2 x CP chunks and gives
    rank i chunks i and 2CP-1-i), so attention FLOPs divide by CP too. Without sequence parallelism the
    norms, residual adds and the embedding output are replicated on every TP rank (Korthikanti et al.
    2022, Sec. 4.2.2); with it they are sharded."""
    t, d, p = s.tokens, s.d_model, s.tensor_parallel
    hd, f, V = s.head_dim, s.d_ff, s.vocab_size
    heads, kv = s.n_heads / p, s.n_kv_heads / p
    a, sm = prec.activation_bytes, prec.softmax_bytes
    sp = p if s.sequence_parallel else 1
    w = StepWorkload()
    # --- attention block (Megatron split: QKV column-parallel, output row-parallel)
    w.gemms.append(Gemm("qkv_proj", t, (heads + 2 * kv) * hd, d))
    if kernels.positions == "rope":
        w.memory_ops.append(MemoryOp("rotary", t * (heads + kv) * hd * kernels.rope_bytes(a),
                                     kernels=1 if kernels.kind == "fused" else 8))
    if attention == "fused":
        flops = 4.0 * s.batch * heads * s.seq_len * s.seq_len * hd * (0.5 if causal else 1.0) / s.context_parallel
        qkvo = t * (2 * heads + 2 * kv) * hd * a
        w.attention = Attention(flops, qkvo, s.seq_len, causal)
    else:   # eager attention is not context-parallel (Megatron's CP runs fused kernels only)
        scores = s.batch * heads * s.seq_len * s.seq_len          # elements of the score matrix
        w.gemms.append(Gemm("attn_scores", s.seq_len, s.seq_len, hd, batch=s.batch * heads, has_weight=False))
        # scale + mask (read/write), softmax in fp32 under autocast (read a, write sm), cast back (read sm, write a)
        cast = (sm + a) if sm != a else 0
        w.memory_ops.append(MemoryOp("attn_softmax", scores * (2 * a + a + sm + cast), kernels=3,
                                     pattern="cross_entropy"))   # a softmax-class kernel (exp + row sums)
        if kernels.dropout:   # dropout on the attention probabilities (inside a fused kernel, free)
            w.memory_ops.append(MemoryOp("attn_dropout", scores * (2 * a + 1), bwd_factor=1.0))
        w.gemms.append(Gemm("attn_values", s.seq_len, hd, s.seq_len, batch=s.batch * heads, has_weight=False))
        w.selective_recompute += ["attn_scores", "attn_softmax", "attn_values"]
    w.gemms.append(Gemm("out_proj", t, d, heads * hd))
    # --- MLP
    up = 2 * f / p if mlp == "swiglu" else f / p
    w.gemms.append(Gemm("mlp_up", t, up, d))
    act_bytes = t * (f / p) * (kernels.swiglu_bytes(a) if mlp == "swiglu" else 2 * a)
    w.memory_ops.append(MemoryOp("mlp_activation", act_bytes, pattern="gelu",
                                 kernels=2 if (mlp == "swiglu" and kernels.kind == "eager") else 1))
    w.gemms.append(Gemm("mlp_down", t, d, f / p))
    # --- norms and residual adds (2 each per block): one pass each with fused kernels, more when eager
    r = kernels.residual_bytes(a)
    norm_kernels = 2 if kernels.kind == "fused" else (12 if kernels.norm == "rmsnorm" else 4)
    w.memory_ops.append(MemoryOp("layer_norms", 2 * t * d * kernels.norm_bytes(a) / sp, kernels=norm_kernels,
                                 pattern="layer_norm"))
    w.memory_ops.append(MemoryOp("residual_adds", 2 * t * d * (r + a + r) / sp, kernels=2))
    if kernels.dropout:   # after the attention output projection and after the MLP
        w.memory_ops.append(MemoryOp("dropout", 2 * t * d * kernels.dropout_bytes(a) / sp, bwd_factor=1.0,
                                     kernels=2 if kernels.kind == "eager" else 0))
    if prec.fp8:
        w.memory_ops.append(_fp8_casts(t, d, heads * hd, (heads + 2 * kv) * hd, up, f / p, sp, a, fp8_recipe))
    # --- model-level ops
    learned = 3 * a if kernels.positions == "learned" else 0    # the position embedding added in
    w.memory_ops.append(MemoryOp("embedding", t * d * (a + prec.param_bytes + learned) / sp, per_layer=False))
    w.memory_ops.append(MemoryOp("final_norm", t * d * kernels.norm_bytes(a) / sp, per_layer=False,
                                 pattern="layer_norm"))
    predicted = t * kernels.predicted_fraction   # the positions the head runs on (BERT: the masked ones)
    w.gemms.append(Gemm("lm_head", predicted, V / p, d, per_layer=False))
    logits = predicted * V / p
    if cross_entropy == "fused":
        # one kernel reads the logits (log-sum-exp per row); backward reads them and writes the gradient in place
        w.memory_ops.append(MemoryOp("loss", logits * a, bwd_factor=2.0, kernels=2, per_layer=False,
                                     pattern="cross_entropy_fused"))
    else:
        # cross-entropy over the logits in fp32 (autocast list): read logits, write/read log-softmax,
        # backward writes the fp32 gradient and casts it to the activation dtype.
        w.memory_ops.append(MemoryOp("loss", logits * (a + 3 * sm), bwd_factor=(3 * sm + a) / (a + 3 * sm),
                                     kernels=3, per_layer=False, pattern="cross_entropy"))
    return w


# Bytes per element of one fp8 quantization (TransformerEngine): read the 16-bit tensor, write the fp8
# tensor and its transpose (Hopper's fp8 GEMMs need both layouts: forward / data gradient vs weight
# gradient). Where TE fuses the cast into the kernel that produced the tensor (LayerNorm before QKV and
# MLP-up, the activation before MLP-down) only the writes remain. Per-tensor current scaling first reads
# the tensor once more for its amax; delayed scaling records the amax in the same pass (and reduces the
# amax history once per step, which is small); MXFP8 / block scaling write one scale per 32 (128) values.
FP8_AMAX_PASS = {"delayed": 0.0, "current": 1.0, "mxfp8": 0.0, "blockwise": 0.0}
FP8_SCALE_BYTES = {"delayed": 0.0, "current": 0.0, "mxfp8": 2 / 32, "blockwise": 2 / 128}


def _fp8_casts(t, d, attn_out, qkv_out, up_out, f, sp, a, recipe: str) -> MemoryOp:
    """The quantize kernels of one layer's four fp8 linears: inputs in the forward, output gradients in the
    backward (Micikevicius et al. 2022, "FP8 Formats for Deep Learning"; TransformerEngine's
    cast_transpose kernels)."""
    write = 2 + FP8_SCALE_BYTES[recipe]
    amax = FP8_AMAX_PASS[recipe] * a
    fused_inputs = t * (2 * d / sp + f)                      # LN -> QKV, LN -> MLP-up, activation -> MLP-down
    fwd = fused_inputs * (write + amax) + t * attn_out * (a + write + amax)
    grads = t * (qkv_out + d + up_out + d)                   # output gradients of QKV, proj, MLP-up, MLP-down
    bwd = grads * (a + write + amax)
    return MemoryOp("fp8_casts", fwd, bwd_factor=bwd / fwd, kernels=4)


def parameter_count(n_layers, d_model, n_heads, n_kv_heads, d_ff, vocab_size, mlp: str, tied: bool,
                    seq_len=0, learned_positions: bool = False):
    """Trainable parameters (weights; norms and biases included as 4*d per layer)."""
    hd = d_model // n_heads
    attn = d_model * (n_heads + 2 * n_kv_heads) * hd + n_heads * hd * d_model
    mlp_p = (3 if mlp == "swiglu" else 2) * d_model * d_ff
    per_layer = attn + mlp_p + 4 * d_model
    embed = vocab_size * d_model * (1 if tied else 2)
    return n_layers * per_layer + embed + 2 * d_model + (seq_len * d_model if learned_positions else 0)
