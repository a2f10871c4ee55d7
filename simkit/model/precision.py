"""Mixed precision: which dtype each kind of tensor is held and computed in.

Follows `torch.autocast` semantics: matmuls run in the low-precision dtype, while softmax, losses
and norms are on its float32 list (PyTorch docs, "Automatic Mixed Precision package — CUDA ops
that can autocast to float32"). Master weights and optimizer states stay in fp32 (Micikevicius et
al. 2018, "Mixed Precision Training", Sec. 3.1).
"""
from __future__ import annotations

from dataclasses import dataclass

BYTES = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "fp8": 1}


@dataclass(frozen=True)
class PrecisionPolicy:
    precision: str
    gemm_dtype: str               # dtype whose peak FLOP/s applies to matmuls
    activation_bytes: int         # activations between ops
    softmax_bytes: int            # softmax / loss outputs (fp32 under autocast)
    param_bytes: int              # master weights
    grad_bytes: int               # gradients as held and reduced by DDP (param dtype)
    optimizer_state_bytes: int    # per state tensor (exp_avg, exp_avg_sq, momentum)
    weight_copy_bytes: int        # low-precision weight copy made by autocast per micro-step (0 for fp32)
    loss_scaling: bool            # fp16: GradScaler unscale + inf check over the gradients


def policy(precision: str) -> PrecisionPolicy:
    """The precision policy for a plan's `training.precision`."""
    if precision in ("fp32", "tf32"):
        # tf32 changes only the matmul unit; tensors stay fp32.
        return PrecisionPolicy(precision, precision, 4, 4, 4, 4, 4, 0, False)
    if precision == "fp8":
        # Transformer-Engine style: fp8 GEMMs with bf16 activations between them.
        return PrecisionPolicy(precision, "fp8", 2, 4, 4, 4, 4, 2, False)
    return PrecisionPolicy(precision, precision, 2, 4, 4, 4, 4, 2, precision == "fp16")
