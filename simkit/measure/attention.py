"""Attention throughput: torch.nn.functional.scaled_dot_product_attention, forward and backward.

FLOPs follow the FlashAttention-2 benchmark convention (Dao 2023, Sec. 4.1, and
flash-attention/benchmarks/benchmark_flash_attention.py): forward 4*b*h*s*s*d (QK^T and PV, two
FLOP per multiply-add), halved for causal masking; backward 2.5x forward.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from simkit.measure import Target
from simkit.measure.gemm import torch_dtype
from simkit.measure.timing import Budget, Rate, measure_rate, random_tensor

BACKWARD_FACTOR = 2.5


@dataclass(frozen=True, kw_only=True, slots=True)
class AttentionShape:
    batch: int
    heads: int
    seq_len: int
    head_dim: int
    dtype: str
    causal: bool = True

    @property
    def label(self) -> str:
        return f"{self.dtype}.b{self.batch}h{self.heads}s{self.seq_len}d{self.head_dim}"


def forward_flop(shape: AttentionShape) -> float:
    full = 4.0 * shape.batch * shape.heads * shape.seq_len**2 * shape.head_dim
    return full / 2 if shape.causal else full


def backward_flop(shape: AttentionShape) -> float:
    return BACKWARD_FACTOR * forward_flop(shape)


def make_passes(target: Target, shape: AttentionShape) -> tuple[Callable[[], object], Callable[[], object]]:
    """(forward call, backward call). The backward call reuses one retained graph, so it times the
    backward kernels alone."""
    dims = (shape.batch, shape.heads, shape.seq_len, shape.head_dim)
    q, k, v = (random_tensor(dims, torch_dtype(shape.dtype), target).requires_grad_() for _ in range(3))

    def forward():
        return F.scaled_dot_product_attention(q, k, v, is_causal=shape.causal)

    out = forward()
    grad_out = random_tensor(dims, torch_dtype(shape.dtype), target)

    def backward():
        return torch.autograd.grad(out, (q, k, v), grad_out, retain_graph=True)

    return forward, backward


@dataclass(frozen=True, kw_only=True, slots=True)
class AttentionResult:
    shape: AttentionShape
    forward: Rate
    backward: Rate


def sweep(target: Target, shapes: list[AttentionShape], budget_s: float, *,
          item_budget: Callable[[float], Budget], on_item: Callable[[str], None] = lambda label: None,
          previous: list[AttentionResult] | None = None) -> list[AttentionResult]:
    """Forward and backward of every shape within about `budget_s`. With `previous` (an earlier
    round of the same sweep) the new samples are appended to its results."""
    deadline = time.monotonic() + budget_s
    results = []
    for done, shape in enumerate(shapes):
        on_item(f"attention {shape.label}")
        forward, backward = make_passes(target, shape)
        share = max(deadline - time.monotonic(), 0.0) / (len(shapes) - done)
        rates = {}
        for name, call, flop, part in (("forward", forward, forward_flop(shape), 1 / 3.5),
                                       ("backward", backward, backward_flop(shape), 2.5 / 3.5)):
            rates[name] = measure_rate(call, flop, "flop_per_s", target, item_budget(share * part))
            if previous:
                rates[name] = getattr(previous[done], name).extended(rates[name])
        results.append(AttentionResult(shape=shape, **rates))
    return results
