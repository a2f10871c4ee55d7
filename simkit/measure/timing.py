"""Timing discipline shared by every micro-benchmark.

Following torch.utils.benchmark and triton.testing.do_bench: warm up for a time budget, repeat each
call enough times that one sample is well above the clock's resolution, synchronize around CUDA
work (CUDA events), keep every raw sample and summarize with the median and the interquartile range.
torch is imported by the timers only, so the statistics here load without it.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from simkit.measure import Target
from simkit.track.regression import median_iqr  # the one definition, shared with the history store

NOISY_IQR_FRACTION = 0.1
"""A result whose IQR exceeds this fraction of its median is flagged as noisy."""
_RANDOM_POOL_ELEMENTS = 2**20


@dataclass(frozen=True, kw_only=True, slots=True)
class Budget:
    """How long one measurement may take and how many samples it keeps."""

    warmup_s: float
    """Calls run (untimed) for this long first; at least one call."""
    measure_s: float
    """Timed samples are taken for about this long."""
    min_samples: int = 5
    """Keep sampling past `measure_s` until this many (but never past 2x `measure_s` with 3)."""
    max_samples: int = 50
    min_sample_s: float = 1e-3
    """Each sample repeats the call until it lasts at least this long (clock resolution, launch cost)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Rate:
    """A throughput: work per second for every sample, with its median and IQR."""

    unit: str
    """`flop_per_s` or `bytes_per_s`."""
    samples: tuple[float, ...]
    median: float
    iqr: float
    rounds: tuple[int, ...] = ()
    """Samples taken in each round (interleaved passes over all benchmarks), in order."""

    @classmethod
    def from_seconds(cls, work: float, seconds: tuple[float, ...], unit: str) -> Rate:
        """Rates `work / t` for every sample time `t`."""
        samples = tuple(work / t for t in seconds)
        median, iqr = median_iqr(samples)
        return cls(unit=unit, samples=samples, median=median, iqr=iqr, rounds=(len(samples),))

    def extended(self, later: Rate) -> Rate:
        """This rate with the samples of a later round of the same benchmark appended."""
        samples = self.samples + later.samples
        median, iqr = median_iqr(samples)
        rounds = (self.rounds or (len(self.samples),)) + (later.rounds or (len(later.samples),))
        return Rate(unit=self.unit, samples=samples, median=median, iqr=iqr, rounds=rounds)

    @property
    def round_medians(self) -> tuple[float, ...]:
        """The median of each round: samples within a round share one machine state, so rounds,
        not samples, are the independent measurements a comparison between runs should use."""
        out, start = [], 0
        for count in self.rounds:
            out.append(median_iqr(self.samples[start:start + count])[0])
            start += count
        return tuple(out)

    @property
    def noisy(self) -> bool:
        return self.iqr > NOISY_IQR_FRACTION * self.median


class _CpuClock:
    def start(self) -> float:
        return time.perf_counter()

    def stop(self, started: float) -> float:
        return time.perf_counter() - started

    def sync(self) -> None:
        pass


class _CudaClock:
    """CUDA events recorded on the stream before and after the calls: GPU time, with no host
    synchronization inside a sample."""

    def start(self):
        import torch

        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def stop(self, started) -> float:
        import torch

        ended = torch.cuda.Event(enable_timing=True)
        ended.record()
        ended.synchronize()
        return started.elapsed_time(ended) / 1e3  # elapsed_time is in milliseconds

    def sync(self) -> None:
        import torch

        torch.cuda.synchronize()


def clock_for(target: Target):
    return _CudaClock() if target.kind == "cuda" else _CpuClock()


def warm_up(call: Callable[[], object], target: Target, warmup_s: float) -> float:
    """Run `call` for `warmup_s` (at least once); returns the last seen seconds per call."""
    clock = clock_for(target)
    began = time.perf_counter()
    per_call = math.inf
    while True:
        started = time.perf_counter()
        call()
        clock.sync()
        per_call = time.perf_counter() - started
        if time.perf_counter() - began >= warmup_s:
            return per_call


def time_call(call: Callable[[], object], target: Target, budget: Budget) -> tuple[tuple[float, ...], int]:
    """Seconds per call for every sample, and the number of calls in one sample."""
    clock = clock_for(target)
    per_call = warm_up(call, target, budget.warmup_s)
    number = max(1, math.ceil(budget.min_sample_s / max(per_call, 1e-9)))
    samples: list[float] = []
    began = time.perf_counter()
    while True:
        started = clock.start()
        for _ in range(number):
            call()
        samples.append(clock.stop(started) / number)
        elapsed = time.perf_counter() - began
        if (len(samples) >= budget.max_samples
                or (elapsed >= budget.measure_s and len(samples) >= budget.min_samples)
                or (elapsed >= 2 * budget.measure_s and len(samples) >= 3)):
            return tuple(samples), number


def measure_rate(call: Callable[[], object], work: float, unit: str, target: Target, budget: Budget) -> Rate:
    """Time `call` and turn it into `work` per second."""
    seconds, _ = time_call(call, target, budget)
    return Rate.from_seconds(work, seconds, unit)


def random_tensor(shape: tuple[int, ...], dtype, target: Target):
    """Normal random values (never zeros) of any size, fast: one pool of 2**20 draws is tiled,
    because drawing hundreds of millions of numbers takes seconds on a small CPU."""
    import torch

    numel = math.prod(shape)
    pool = torch.randn(min(numel, _RANDOM_POOL_ELEMENTS), device=target.tensor_device)
    flat = pool.repeat(math.ceil(numel / pool.numel()))[:numel]
    return flat.view(shape).to(dtype)


@contextlib.contextmanager
def configured(target: Target) -> Iterator[None]:
    """Explicit thread count and denormal handling while measuring; the thread count is restored."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(target.threads)
    torch.set_flush_denormal(False)  # torch's default, set so the recorded value is known to hold
    try:
        yield
    finally:
        torch.set_num_threads(previous)
