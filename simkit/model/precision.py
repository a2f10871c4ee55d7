"""Mixed precision: which dtype each kind of tensor is held and computed in.

Two ways of holding the weights are in use, and they differ in memory and in per-step work:

- `master_weights: model` -- `torch.autocast` (PyTorch AMP, FSDP's MixedPrecision, HF Trainer): the
  model's weights and gradients stay fp32; every micro-step autocast casts the weights to the compute
  dtype (kept for backward), matmuls run in it, softmax, losses and norms are on autocast's float32
  list (PyTorch docs, "Automatic Mixed Precision package - CUDA ops that can autocast to float32").
- `master_weights: optimizer` -- Megatron-LM / NeMo (Float16OptimizerWithFloat16Params, the
  distributed optimizer) and DeepSpeed ZeRO: the model holds 16-bit weights, the optimizer an fp32
  master copy beside its states (Micikevicius et al. 2018, "Mixed Precision Training", Sec. 3.1;
  Rajbhandari et al. 2020, Sec. 3: 2 + 2 + 12 bytes per parameter). Megatron accumulates and reduces
  gradients in fp32 ("main_grad"; bf16 requires it, megatron/training/arguments.py), so its gradient
  buffer is 4 bytes per parameter. No per-micro-step weight cast: the optimizer writes the 16-bit
  copy once per step.

fp8 (TransformerEngine style) keeps bf16 activations between the fp8 GEMMs. With the fp32 master in the
optimizer, the model's weights themselves are fp8 (Megatron-Core / NeMo / Megatron-Bridge fp8 recipes
with fp8_param_gather: TransformerEngine's fp8 primary weights), gathered in fp8 by ZeRO-1.
"""
from __future__ import annotations

from dataclasses import dataclass

BYTES = {"fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "fp8": 1}
LINEAR_GEMMS = ("qkv_proj", "out_proj", "mlp_up", "mlp_down")


@dataclass(frozen=True)
class PrecisionPolicy:
    precision: str
    gemm_dtype: str               # dtype whose peak FLOP/s applies to matmuls
    activation_bytes: int         # activations between ops
    softmax_bytes: int            # softmax / loss outputs (fp32 under autocast)
    param_bytes: int              # the model's weights as held (fp32 under autocast, 16-bit with an fp32 master)
    grad_bytes: int               # gradients as held and reduced
    optimizer_state_bytes: int    # per state tensor (exp_avg, exp_avg_sq, momentum)
    master_bytes: int             # fp32 master copy held by the optimizer (0 when the model's weights are fp32)
    weight_copy_bytes: int        # low-precision weight copy made by autocast per micro-step (0 without autocast)
    loss_scaling: bool            # fp16: GradScaler unscale + inf check over the gradients
    master_weights: str = "model"
    other_gemm_dtype: str = ""    # matmuls outside the linear layers (attention, LM head): bf16 in fp8 plans

    @property
    def fp8(self) -> bool:
        return self.precision == "fp8"

    def dtype_of(self, gemm_name: str) -> str:
        """TransformerEngine runs only the transformer layers' linear GEMMs in fp8; the attention core and
        the LM head (Megatron's output layer is not a TE module) stay bf16."""
        if self.fp8 and gemm_name not in LINEAR_GEMMS:
            return self.other_gemm_dtype
        return self.gemm_dtype


def policy(precision: str, master_weights: str = "model") -> PrecisionPolicy:
    """The precision policy for a plan's `training.precision` and `training.master_weights`."""
    if precision in ("fp32", "tf32"):
        # tf32 changes only the matmul unit; tensors stay fp32.
        return PrecisionPolicy(precision, precision, 4, 4, 4, 4, 4, 0, 0, False, master_weights)
    gemm = "fp8" if precision == "fp8" else precision
    scaling = precision == "fp16"
    other = "bf16" if precision == "fp8" else precision
    if master_weights == "optimizer":
        weights = 1 if precision == "fp8" else 2
        return PrecisionPolicy(precision, gemm, 2, 4, weights, 4, 4, 4, 0, scaling, master_weights, other)
    return PrecisionPolicy(precision, gemm, 2, 4, 4, 4, 4, 0, 2, scaling, master_weights, other)
