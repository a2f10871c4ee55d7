"""Matmul throughput over a grid of transformer-like shapes and every dtype the device supports.

A shape (m, n, k) is timed as a linear layer runs it in training: one call is the three GEMMs of its
forward and backward, each 2*m*n*k FLOP, outputs preallocated (`LAYOUTS`):
  forward        Y[m, n]  = X[m, k] @ W[n, k]^T   (F.linear: the weight is read transposed)
  input grad     dX[m, k] = dY[m, n] @ W[n, k]    (inner dimension n)
  weight grad    dW[n, k] = dY[m, n]^T @ X[m, k]  (inner dimension m)
Why: a training step runs these three layouts in equal FLOP shares, and a library may serve them at
very different speeds. On a CPU without native bf16 instructions (an AMD EPYC with AVX2 only, torch
2.13 / oneDNN, 512^3, one thread) bf16 ran at 5.1, 1.0 and 17 GFLOP/s in the three layouts and a plain
A @ B at 1.2: timing A @ B alone made every bf16 step of the CPU validation suite predicted 1.7-2.3x too
slow. cuBLAS serves the layouts alike, so on GPUs this changes little. fp8 is one torch._scaled_mm
(e4m3 inputs, bf16 output, unit scales; the layout it requires), on CUDA only (see `supported_dtypes`).
Each measurement has a time budget; a shape whose calls would not fit is measured at a smaller size and
extrapolated (see `plan_shape`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from simkit.measure import Target, operand_cache_bytes
from simkit.measure.timing import Budget, Rate, measure_rate, random_tensor

Shape = tuple[int, int, int]
DTYPE_ORDER = ("fp32", "tf32", "fp16", "bf16", "fp8")
EXTRAPOLATION = ("throughput of the largest measured shape with the same aspect (all dims halved until "
                 "its calls fit the time budget) taken to hold at this shape; larger GEMMs are usually "
                 "at least as efficient, so this errs low")
_MAX_INPUT_SETS = 64
_MAX_ROTATION_BYTES = 2**30


def torch_dtype(dtype: str) -> torch.dtype:
    """Storage dtype of the inputs (tf32 stores fp32; the matmul precision flag selects TF32)."""
    return {"fp32": torch.float32, "tf32": torch.float32, "fp16": torch.float16,
            "bf16": torch.bfloat16, "fp8": getattr(torch, "float8_e4m3fn", None)}[dtype]


def gemm_flop(shape: Shape) -> float:
    m, n, k = shape
    return 2.0 * m * n * k  # one multiply and one add per (i, j, l)


def gemm_shapes(max_size: int, min_size: int = 64) -> list[Shape]:
    """Square sizes min..max in powers of two, plus the skinny GEMMs of a transformer layer with
    T = max tokens and hidden h = max/4: MLP up (T, 4h, h), MLP down (T, h, 4h), weight gradient
    (h, 4h, T) and a few-token step (T/16, 4h, 4h)."""
    squares = [(s, s, s) for s in _powers_of_two(min_size, max_size)]
    t, h = max_size, max_size // 4
    skinny = [(t, 4 * h, h), (t, h, 4 * h), (h, 4 * h, t), (max(t // 16, 16), 4 * h, 4 * h)]
    return sorted(set(squares + skinny), key=lambda s: (gemm_flop(s), s))


def _powers_of_two(low: int, high: int) -> list[int]:
    return [2**e for e in range(int(math.log2(low)), int(math.log2(high)) + 1)]


@contextlib.contextmanager
def matmul_precision(dtype: str) -> Iterator[None]:
    """TF32 on for the `tf32` rows only; fp32 rows are measured in full fp32 ('highest')."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high" if dtype == "tf32" else "highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def layouts(dtype: str) -> int:
    """GEMMs per timed call: the three of a training linear layer, or one `_scaled_mm` for fp8."""
    return 1 if dtype == "fp8" else 3


def _inputs(target: Target, dtype: str, shape: Shape) -> tuple[torch.Tensor, ...]:
    m, n, k = shape
    if dtype == "fp8":  # _scaled_mm wants B column-major
        a = random_tensor((m, k), torch_dtype(dtype), target)
        b = random_tensor((n, k), torch_dtype(dtype), target).t()
        c = torch.empty((m, n), dtype=torch.bfloat16, device=target.tensor_device)
        return a, b, c
    x, w, dy = (random_tensor(s, torch_dtype(dtype), target) for s in ((m, k), (n, k), (m, n)))
    outputs = (torch.empty(s, dtype=torch_dtype(dtype), device=target.tensor_device) for s in ((m, n), (m, k), (n, k)))
    return (x, w, dy, *outputs)


def _call(dtype: str, *tensors: torch.Tensor) -> Callable[[], object]:
    if dtype == "fp8":
        a, b, c = tensors
        scale = torch.ones((), device=a.device)
        return lambda: torch._scaled_mm(a, b, scale, scale, out_dtype=torch.bfloat16, out=c)
    x, w, dy, y, dx, dw = tensors

    def linear_forward_and_backward():
        torch.matmul(x, w.t(), out=y)      # forward, as F.linear
        torch.matmul(dy, w, out=dx)        # gradient of the input
        torch.matmul(dy.t(), x, out=dw)    # gradient of the weight
    return linear_forward_and_backward


def input_sets(shape: Shape, dtype: str, cache_bytes: int) -> int:
    """How many copies of the operands to rotate through so consecutive calls do not find them in
    the cache (see `operand_cache_bytes`): enough to cover twice the cache, at most 64 and 1 GiB."""
    m, n, k = shape
    itemsize = torch.tensor([], dtype=torch_dtype(dtype)).element_size()
    working_set = (m * k + k * n + m * n) * itemsize * (2 if layouts(dtype) == 3 else 1)
    wanted = math.ceil(2 * cache_bytes / working_set)
    return max(1, min(wanted, _MAX_INPUT_SETS, _MAX_ROTATION_BYTES // working_set))


def make_gemm(target: Target, dtype: str, shape: Shape) -> Callable[[], object]:
    """A zero-argument call doing `layouts(dtype)` GEMMs of `shape`; successive calls rotate through copies
    of the inputs."""
    first = _inputs(target, dtype, shape)
    copies = [first] + [tuple(t.clone() for t in first)
                        for _ in range(input_sets(shape, dtype, operand_cache_bytes(target)) - 1)]
    calls = itertools.cycle([_call(dtype, *tensors) for tensors in copies])
    return lambda: next(calls)()


def supported_dtypes(target: Target) -> list[str]:
    """Dtypes this device multiplies: TF32 needs CUDA compute capability 8.0, fp8 8.9 (and
    torch._scaled_mm); on CPU each dtype is kept if a tiny matmul runs, except fp8: CPUs have no fp8
    matrix units, and torch._scaled_mm on CPU is a slow emulation path whose throughput swings
    widely from run to run, so it says nothing about the hardware."""
    cuda_capability = torch.cuda.get_device_capability(0) if target.kind == "cuda" else None
    kept = []
    for dtype in DTYPE_ORDER:
        if dtype == "tf32" and (cuda_capability is None or cuda_capability < (8, 0)):
            continue
        if dtype == "fp8" and (cuda_capability is None or cuda_capability < (8, 9)):
            continue
        if torch_dtype(dtype) is None or (dtype == "fp8" and not hasattr(torch, "_scaled_mm")):
            continue
        try:
            with matmul_precision(dtype):
                make_gemm(target, dtype, (16, 16, 16))()
        except (RuntimeError, TypeError, NotImplementedError):
            continue
        kept.append(dtype)
    return kept


def measure_gemm(target: Target, dtype: str, shape: Shape, budget: Budget) -> Rate:
    """FLOP/s of `shape` in `dtype`, over the GEMM layouts of a training step (see the module docstring)."""
    call = make_gemm(target, dtype, shape)
    with matmul_precision(dtype):
        return measure_rate(call, layouts(dtype) * gemm_flop(shape), "flop_per_s", target, budget)


# ----------------------------------------------------------------------------- the sweep
@dataclass(frozen=True, kw_only=True, slots=True)
class GemmResult:
    dtype: str
    shape: Shape
    """The GEMM this row describes (m, n, k)."""
    measured_shape: Shape
    """Where `rate` was measured: `shape` itself unless extrapolated."""
    rate: Rate

    @property
    def extrapolated(self) -> bool:
        return self.measured_shape != self.shape


def plan_shape(shape: Shape, flop_per_s: float | None, seconds: float, calls: int) -> Shape:
    """`shape`, or the shape with all dims halved (none below 16) until `calls` calls at the expected
    throughput fit in `seconds`. Without an expected throughput the shape is taken as it is."""
    if flop_per_s is None:
        return shape
    while gemm_flop(shape) * calls / flop_per_s > seconds and min(shape) >= 32:
        shape = tuple(d // 2 for d in shape)
    return shape


def sweep(target: Target, dtypes: list[str], shapes: list[Shape], budget_s: float, *,
          item_budget: Callable[[float], Budget], on_item: Callable[[str], None] = lambda label: None,
          rounds: int = 1, previous: list[GemmResult] | None = None) -> list[GemmResult]:
    """Measure every (dtype, shape) within about `budget_s`; the time left is shared evenly by the
    measurements left, so cheap small shapes hand their time to large ones.

    This sweep is one of `rounds` alike: shapes are planned so that their calls over all rounds fit.
    With `previous` (an earlier round) its shapes are kept and the new samples appended to it."""
    if previous:
        return _next_round(target, previous, budget_s, item_budget, on_item)
    deadline = time.monotonic() + budget_s
    items = [(dtype, shape) for dtype in dtypes for shape in sorted(shapes, key=gemm_flop)]
    measured: dict[tuple[str, Shape], Rate] = {}
    results: list[GemmResult] = []
    for done, (dtype, shape) in enumerate(items):
        seconds = max(deadline - time.monotonic(), 0.0) / (len(items) - done)
        budget = item_budget(seconds)
        known = [r.median for (d, s), r in measured.items() if d == dtype]
        expected = max(known) if known else None
        target_shape = plan_shape(shape, expected, (budget.measure_s + budget.warmup_s) * rounds,
                                  (budget.min_samples + 1) * rounds * layouts(dtype))
        on_item(f"matmul {dtype} {'x'.join(map(str, shape))}")
        if (dtype, target_shape) not in measured:
            measured[dtype, target_shape] = measure_gemm(target, dtype, target_shape, budget)
            if target_shape != shape:
                results.append(GemmResult(dtype=dtype, shape=target_shape, measured_shape=target_shape,
                                          rate=measured[dtype, target_shape]))
        results.append(GemmResult(dtype=dtype, shape=shape, measured_shape=target_shape,
                                  rate=measured[dtype, target_shape]))
    return results


def _next_round(target: Target, previous: list[GemmResult], budget_s: float,
                item_budget: Callable[[float], Budget], on_item: Callable[[str], None]) -> list[GemmResult]:
    """Measure again every shape the first round measured (new inputs, new warm-up); append."""
    deadline = time.monotonic() + budget_s
    pairs = list(dict.fromkeys((r.dtype, r.measured_shape) for r in previous))
    earlier = {(r.dtype, r.measured_shape): r.rate for r in previous}
    rates: dict[tuple[str, Shape], Rate] = {}
    for done, (dtype, shape) in enumerate(pairs):
        budget = item_budget(max(deadline - time.monotonic(), 0.0) / (len(pairs) - done))
        on_item(f"matmul {dtype} {'x'.join(map(str, shape))}")
        rates[dtype, shape] = earlier[dtype, shape].extended(measure_gemm(target, dtype, shape, budget))
    return [dataclasses.replace(r, rate=rates[r.dtype, r.measured_shape]) for r in previous]
