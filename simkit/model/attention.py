"""Fused-attention kernels by GPU generation: the share of the dense 16-bit peak they reach.

Attention kernels reach very different fractions of peak on different generations, and the kernel a
stack runs differs too. A plan names the kernel (`model.attention_kernel`) or takes its device's
generation default (the kernel current stacks run there). Values are at long sequences and head
dimension 128, (forward, backward) as fractions of the dense bf16/fp16 peak:

- FlashAttention (v1) on Ampere: "25-40% of the theoretical maximum FLOPs/s" (Dao 2023,
  "FlashAttention-2", Sec. 1); backward slower than forward: (0.40, 0.30).
- FlashAttention-2 on Ampere: "50-73% of the theoretical maximum FLOPs/s on A100" in the forward pass
  (Dao 2023, abstract); the backward pass does 2.5x the forward's FLOPs with more synchronization and
  reaches less: (0.65, 0.50), the middle-upper part of that range and a backward lower by the ratio of
  FlashAttention-1's two passes.
- FlashAttention-2 on Hopper: "FlashAttention-2 ... only achieves 35% utilization on the H100"
  (Shah et al. 2024, "FlashAttention-3", Sec. 1): (0.35, 0.27).
- FlashAttention-3 on Hopper: "up to 740 TFLOPs/s (75% utilization)" in BF16 forward, backward
  "1.5-1.75x faster than FlashAttention-2" (Shah et al. 2024, abstract and Sec. 4.1): (0.70, 0.45).
- cuDNN fused attention (TransformerEngine's default on Hopper and Blackwell, used by Megatron-Core and
  NeMo): on Hopper at FlashAttention-3's level (the same warp-specialized wgmma design): (0.70, 0.45).
  On Blackwell no published figure is in simkit's sources: the Hopper fractions are assumed.
- Where no flash kernel runs (Volta, Turing, AMD without a tuned kernel): PyTorch's memory-efficient SDPA
  at FlashAttention-1's level (assumption).

Short sequences reach less: the kernel parallelizes over the sequence blocks of each head, and fixed
per-block work weighs more. The rate is scaled by s / (s + 256): two thirds at 512 tokens, 0.89 at 2048,
0.97 at 8192 (assumption, the shape of FlashAttention-2's forward curves in Dao 2023, Fig. 4, which
reach about two thirds of their long-sequence rate at 512 tokens).
"""
from __future__ import annotations

import numpy as np

KERNELS = ("flash-attention-1", "flash-attention-2", "flash-attention-3", "cudnn", "memory-efficient")
ARCHITECTURES = ("volta", "turing", "ampere", "ada", "hopper", "blackwell", "cdna2", "cdna3", "cpu")

# (kernel, architecture) -> (forward, backward) fraction of the dense 16-bit peak at long sequences
EFFICIENCY = {
    ("flash-attention-1", "ampere"): (0.40, 0.30),
    ("flash-attention-2", "ampere"): (0.65, 0.50),
    ("flash-attention-2", "ada"): (0.65, 0.50),          # sm_89 runs the Ampere kernel (assumption)
    ("flash-attention-2", "hopper"): (0.35, 0.27),
    ("flash-attention-2", "blackwell"): (0.35, 0.27),    # the Ampere-style kernel, as on Hopper (assumption)
    ("flash-attention-3", "hopper"): (0.70, 0.45),
    ("cudnn", "hopper"): (0.70, 0.45),
    ("cudnn", "blackwell"): (0.70, 0.45),                # assumption: Hopper's fractions
    ("cudnn", "ampere"): (0.65, 0.50),                   # assumption: FlashAttention-2's
}
FALLBACK = (0.40, 0.30)       # FlashAttention-1 level: memory-efficient SDPA and untuned kernels

# What current stacks run by default on each generation
DEFAULT_KERNEL = {"ampere": "flash-attention-2", "ada": "flash-attention-2", "hopper": "cudnn",
                  "blackwell": "cudnn"}

SHORT_SEQUENCE_TOKENS = 256.0


def kernel_for(architecture: str | None, kernel: str = "default") -> str:
    if kernel != "default":
        return kernel
    return DEFAULT_KERNEL.get(architecture or "", "memory-efficient")


def efficiency(architecture: str | None, kernel: str, seq_len) -> tuple:
    """(forward, backward) fraction of the dense 16-bit peak for this kernel on this generation."""
    fwd, bwd = EFFICIENCY.get((kernel_for(architecture, kernel), architecture or ""), FALLBACK)
    s = np.asarray(seq_len, dtype=float)
    short = s / (s + SHORT_SEQUENCE_TOKENS)
    return fwd * short, bwd * short
