"""Is `simkit calibrate`'s fp32 GEMM number as good as torch gets on this machine?

Times each shape many ways -- the three GEMMs of a training linear layer (forward X W^T, input grad
dY W, weight grad dY^T X), which is what calibrate times (simkit/measure/gemm.py), with torch.matmul or
torch.mm, with and without out=, F.linear for the forward; every thread count up to the core count -- and through calibrate's own code path (simkit.measure.gemm with
a --quick run's per-shape budget), interleaved in rounds so that slow and fast phases of a shared
machine hit every way alike. Prints the best way's median, calibrate's median and their ratio.
With --profile, also compares with the median a `simkit calibrate` run wrote (taken at another
time, so on a machine whose speed drifts it measures the drift as well).

    flock /tmp/simkit-cpu.lock python benchmarks/check_gemm_best.py [--profile /tmp/cal.yaml]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from simkit.measure import Target, cpu_count
from simkit.measure.gemm import gemm_flop, measure_gemm
from simkit.measure.timing import Budget, configured

CALIBRATE = "simkit calibrate's measurement"
QUICK_BUDGET = Budget(warmup_s=0.075, measure_s=0.45, min_samples=5, max_samples=25, min_sample_s=2e-3)
"""About what one shape gets in `simkit calibrate --quick` (20 s over 40 GEMMs)."""


def ways(n: int) -> dict[str, callable]:
    """Each way runs the three layouts of a linear layer's forward and backward (3 GEMMs of n^3)."""
    x, w, dy = torch.randn(n, n), torch.randn(n, n), torch.randn(n, n)
    y, dx, dw = torch.empty(n, n), torch.empty(n, n), torch.empty(n, n)

    def with_out(f):
        return lambda: (f(x, w.t(), out=y), f(dy, w, out=dx), f(dy.t(), x, out=dw))

    def without(f):
        return lambda: (f(x, w.t()), f(dy, w), f(dy.t(), x))
    return {"matmul(out=)": with_out(torch.matmul), "matmul": without(torch.matmul), "mm(out=)": with_out(torch.mm),
            "mm": without(torch.mm), "F.linear, a @ b": lambda: (torch.nn.functional.linear(x, w), dy @ w, dy.t() @ x)}


def sample(call, seconds: float) -> list[float]:
    """Seconds per call, one value per call, for about `seconds` after two warm-up calls."""
    call(), call()
    times, began = [], time.perf_counter()
    while time.perf_counter() - began < seconds:
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


def compare(n: int, rounds: int, seconds: float) -> dict[str, float]:
    """Median FLOP/s of every way (and of calibrate's measurement) over interleaved rounds."""
    flop = 3 * gemm_flop((n, n, n))
    rates: dict[str, list[float]] = {}
    for _ in range(rounds):
        for threads in range(1, cpu_count() + 1):
            with configured(Target(kind="cpu", threads=threads)):
                for name, call in ways(n).items():
                    rates.setdefault(f"{name}, {threads} threads", []).extend(flop / t for t in sample(call, seconds))
        target = Target(kind="cpu", threads=cpu_count())
        with configured(target):
            rates.setdefault(CALIBRATE, []).extend(measure_gemm(target, "fp32", (n, n, n), QUICK_BUDGET).samples)
    return {way: statistics.median(r) for way, r in rates.items()}


def profile_median(profile: str, n: int) -> float:
    import yaml

    with open(profile, encoding="utf-8") as fh:
        points = yaml.safe_load(fh)["calibration"]["matmul"]["fp32"]
    return next(p["flop_per_s_median"] for p in points if (p["m"], p["n"], p["k"]) == (n, n, n))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1024,2048")
    parser.add_argument("--profile", help="calibrated profile to compare too")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=0.4, help="per way, thread count and round")
    args = parser.parse_args()
    for n in map(int, args.sizes.split(",")):
        medians = compare(n, args.rounds, args.seconds)
        ours = medians.pop(CALIBRATE)
        way = max(medians, key=medians.get)
        line = (f"fp32 {n}^3: best torch {medians[way] / 1e9:.1f} GFLOP/s ({way}); calibrate's measurement "
                f"{ours / 1e9:.1f} GFLOP/s; ratio {ours / medians[way]:.3f}")
        if args.profile:
            written = profile_median(args.profile, n)
            line += f"; profile {written / 1e9:.1f} GFLOP/s, ratio {written / medians[way]:.3f}"
        print(line, flush=True)


if __name__ == "__main__":
    main()
