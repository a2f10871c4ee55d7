"""Memory bandwidth by working-set size: copy, the STREAM triad, and a fused AdamW-like pass.

Bytes moved are counted the STREAM way (McCalpin, "STREAM: Sustainable Memory Bandwidth in High
Performance Computers"): each array element read or written once counts its size, and write-allocate
traffic is not counted. All arrays are fp32.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch

from simkit.measure import Target
from simkit.measure.timing import Budget, Rate, measure_rate, random_tensor

PATTERNS = ("copy", "triad", "optimizer_step", "first_touch", "cross_entropy", "cross_entropy_fused", "gelu",
            "layer_norm")
HOST_ONLY = ("first_touch",)
"""first_touch is what a CPU pays to map and zero fresh pages: PyTorch's CPU allocator returns large
blocks to the OS (glibc free), so activations are faulted in again every step. GPU caching
allocators keep their blocks, so it is not measured there."""
ARRAYS = {"copy": 2, "triad": 3, "optimizer_step": 4, "first_touch": 1, "cross_entropy": 1, "cross_entropy_fused": 1,
          "gelu": 1, "layer_norm": 1}
KERNEL_PATTERNS = ("cross_entropy", "cross_entropy_fused", "gelu", "layer_norm")
"""Forward + backward of the memory-bound training kernels whose arithmetic (exp, log, erf, row
reductions) can make them slower than a plain stream on a CPU. Bytes are counted the way
simkit.model.workload counts them (fp32): cross-entropy 32 B per logit (forward: read the logits, write,
read and reduce the log-softmax; backward: write the gradient), the fused cross-entropy that the live
model runs with `cross_entropy: fused` 12 B (forward: read the logits; backward: read them and write the
gradient in place), GELU and LayerNorm 24 B per element (forward read + write, backward twice that).
Measured up to KERNEL_MAX_BYTES per working set."""
KERNEL_MAX_BYTES = 64 * 2**20
_KERNEL_BYTES_PER_ELEMENT = {"cross_entropy": 32, "cross_entropy_fused": 12, "gelu": 24, "layer_norm": 24}
_VOCAB, _WIDTH = 8192, 1024
"""fp32 arrays in the working set: copy dst, src; triad a, b, c; AdamW param, grad, exp_avg, exp_avg_sq."""
ACCESSES = {"copy": 2, "triad": 3, "optimizer_step": 7, "first_touch": 1}
"""Array reads+writes per element: copy 1R+1W; triad 2R+1W; AdamW param R+W, grad R,
exp_avg R+W, exp_avg_sq R+W."""
_FP32_BYTES = 4


def elements(pattern: str, working_set_bytes: int) -> int:
    """Elements per array so that all arrays of `pattern` together fill the working set."""
    return max(1, working_set_bytes // (ARRAYS[pattern] * _FP32_BYTES))


def bytes_moved(pattern: str, n: int) -> int:
    """Bytes read plus written by one pass over `n` elements per array."""
    if pattern in KERNEL_PATTERNS:
        return _KERNEL_BYTES_PER_ELEMENT[pattern] * n
    return ACCESSES[pattern] * n * _FP32_BYTES


def _kernel(target: Target, pattern: str, n: int) -> Callable[[], object]:
    """Forward and backward of one training kernel over `n` fp32 elements (autograd.grad, so no
    gradient is accumulated between calls)."""
    import torch.nn.functional as F

    width = _VOCAB if pattern.startswith("cross_entropy") else _WIDTH
    rows = max(1, n // width)
    x = random_tensor((rows, width), torch.float32, target).requires_grad_(True)
    if pattern == "cross_entropy_fused":
        from simkit.measure.training import fused_cross_entropy

        target_ids = torch.randint(0, width, (rows,), device=target.tensor_device)
        data = x.detach().clone()

        def fused():   # the gradient overwrites the logits: start every call from the same values
            x.data.copy_(data)
            return torch.autograd.grad(fused_cross_entropy(x, target_ids), x)
        return fused
    if pattern == "cross_entropy":
        target_ids = torch.randint(0, width, (rows,), device=target.tensor_device)
        return lambda: torch.autograd.grad(F.cross_entropy(x, target_ids), x)
    grad_out = random_tensor((rows, width), torch.float32, target)
    if pattern == "gelu":
        return lambda: torch.autograd.grad(F.gelu(x), x, grad_out)
    weight = torch.ones(width, device=target.tensor_device, requires_grad=True)
    bias = torch.zeros(width, device=target.tensor_device, requires_grad=True)
    return lambda: torch.autograd.grad(F.layer_norm(x, (width,), weight, bias), x, grad_out)


def _copy(target: Target, n: int) -> Callable[[], object]:
    src = random_tensor((n,), torch.float32, target)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def _triad(target: Target, n: int) -> Callable[[], object]:
    b, c = random_tensor((n,), torch.float32, target), random_tensor((n,), torch.float32, target)
    a = torch.empty_like(b)
    return lambda: torch.add(b, c, alpha=3.0, out=a)  # a = b + s*c


def _optimizer_step(target: Target, n: int) -> tuple[Callable[[], object], str]:
    """One AdamW update of a flat fp32 parameter tensor: the fused kernel (torch._fused_adamw_,
    what AdamW(fused=True) runs, without the optimizer's Python bookkeeping), else the foreach one."""
    param, grad, exp_avg = (random_tensor((n,), torch.float32, target) for _ in range(3))
    exp_avg_sq = random_tensor((n,), torch.float32, target).abs_()
    step = torch.ones((), device=target.tensor_device)
    hyper = dict(lr=1e-6, weight_decay=0.01, eps=1e-8, amsgrad=False, maximize=False)
    fused = getattr(torch, "_fused_adamw_", None)
    if fused is not None:
        call = lambda: fused([param], [grad], [exp_avg], [exp_avg_sq], [], [step], beta1=0.9, beta2=0.999, **hyper)
        try:
            call()
            return call, "torch._fused_adamw_"
        except (RuntimeError, NotImplementedError):
            pass
    from torch.optim.adamw import adamw

    call = lambda: adamw([param], [grad], [exp_avg], [exp_avg_sq], [], [step], foreach=True, capturable=False,
                         beta1=0.9, beta2=0.999, **hyper)
    return call, "torch.optim.adamw.adamw(foreach=True)"


def _first_touch(target: Target, n: int) -> Callable[[], object]:
    """Allocate a fresh tensor and write it once: page faults + zeroing + the write."""
    return lambda: torch.empty(n, dtype=torch.float32, device=target.tensor_device).fill_(1.0)


def make_pass(target: Target, pattern: str, working_set_bytes: int) -> tuple[Callable[[], object], int, str]:
    """(call, bytes moved per call, implementation) for one pattern and working-set size."""
    n = elements(pattern, working_set_bytes)
    if pattern == "optimizer_step":
        call, implementation = _optimizer_step(target, n)
    elif pattern == "first_touch":
        call, implementation = _first_touch(target, n), "torch.empty(n).fill_(1.0), a fresh allocation per call"
    elif pattern in KERNEL_PATTERNS:
        width = _VOCAB if pattern.startswith("cross_entropy") else _WIDTH
        n = max(1, n // width) * width
        call = _kernel(target, pattern, n)
        implementation = {"cross_entropy": f"F.cross_entropy forward + backward, vocab {width}",
                          "cross_entropy_fused": f"simkit's fused cross-entropy (in-place gradient) forward + "
                                                 f"backward, vocab {width}",
                          "gelu": "F.gelu forward + backward", "layer_norm": f"F.layer_norm forward + backward, "
                                                                             f"width {width}"}[pattern]
    else:
        call = _copy(target, n) if pattern == "copy" else _triad(target, n)
        implementation = "Tensor.copy_" if pattern == "copy" else "torch.add(b, c, alpha=s, out=a)"
    return call, bytes_moved(pattern, n), implementation


@dataclass(frozen=True, kw_only=True, slots=True)
class BandwidthResult:
    pattern: str
    working_set_bytes: int
    """All arrays of the pattern together."""
    implementation: str
    rate: Rate
    """Bytes moved (read + written) per second."""


def sweep(target: Target, sizes: list[int], budget_s: float, *, item_budget: Callable[[float], Budget],
          patterns: tuple[str, ...] = PATTERNS, on_item: Callable[[str], None] = lambda label: None,
          previous: list[BandwidthResult] | None = None) -> list[BandwidthResult]:
    """Every pattern at every working-set size within about `budget_s`. With `previous` (an earlier
    round of the same sweep) the new samples are appended to its results."""
    deadline = time.monotonic() + budget_s
    patterns = tuple(p for p in patterns if target.kind == "cpu" or p not in HOST_ONLY)
    items = [(pattern, size) for pattern in patterns for size in sizes
             if pattern not in KERNEL_PATTERNS or size <= KERNEL_MAX_BYTES]
    results = []
    for done, (pattern, size) in enumerate(items):
        budget = item_budget(max(deadline - time.monotonic(), 0.0) / (len(items) - done))
        on_item(f"bandwidth {pattern} {size / 2**20:g} MiB")
        call, moved, implementation = make_pass(target, pattern, size)
        rate = measure_rate(call, moved, "bytes_per_s", target, budget)
        if previous:
            rate = previous[done].rate.extended(rate)
        results.append(BandwidthResult(pattern=pattern, working_set_bytes=size, implementation=implementation,
                                       rate=rate))
        del call  # free the arrays before the next size is allocated
    return results
