"""pytest-benchmark suite for the CPU micro-benchmark kernels `simkit calibrate` times.

    flock /tmp/simkit-cpu.lock pytest benchmarks/test_bench_kernels.py
    pytest benchmarks/test_bench_kernels.py --benchmark-disable   # each kernel once, as a test

Each benchmark records the work of one call (FLOP or bytes) in extra_info, so a rate is
work / mean time.
"""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from simkit.measure import Target, cpu_count  # noqa: E402
from simkit.measure.attention import AttentionShape, backward_flop, forward_flop, make_passes  # noqa: E402
from simkit.measure.bandwidth import make_pass  # noqa: E402
from simkit.measure.gemm import gemm_flop, layouts, make_gemm  # noqa: E402
from simkit.measure.timing import configured  # noqa: E402

MIB = 2**20


@pytest.fixture(scope="module")
def target():
    cpu = Target(kind="cpu", threads=cpu_count())
    with configured(cpu):
        yield cpu


@pytest.mark.parametrize("dtype, size", [("fp32", 256), ("fp32", 1024), ("bf16", 256)])
def test_gemm(benchmark, target, dtype, size):
    shape = (size, size, size)
    call = make_gemm(target, dtype, shape)
    benchmark.extra_info["flop"] = layouts(dtype) * gemm_flop(shape)
    benchmark(call)


@pytest.mark.parametrize("pattern", ["copy", "triad", "optimizer_step"])
def test_bandwidth(benchmark, target, pattern):
    call, moved, implementation = make_pass(target, pattern, 64 * MIB)
    benchmark.extra_info.update(bytes=moved, implementation=implementation)
    benchmark(call)


@pytest.mark.parametrize("part", ["forward", "backward"])
def test_attention(benchmark, target, part):
    shape = AttentionShape(batch=2, heads=4, seq_len=256, head_dim=64, dtype="fp32")
    forward, backward = make_passes(target, shape)
    benchmark.extra_info["flop"] = forward_flop(shape) if part == "forward" else backward_flop(shape)
    benchmark(forward if part == "forward" else backward)
