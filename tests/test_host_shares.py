"""Data-parallel workers sharing one calibrated CPU: compute and bandwidth shares."""
from __future__ import annotations

import pytest

from simkit.model import cost
from simkit.hardware import load_device

from samples import CALIBRATED_PROFILE_HEAD

CPU_CALIBRATION = """\
calibration:
  settings: {device: cpu}
  environment: {threads: 2, cpu_count: 2}
  matmul:
    fp32:
      - {m: 1024, n: 1024, k: 1024, flop_per_s_median: 2.0e+11}
"""
CONCURRENT = """\
  collectives:
    backend: gloo
    nproc: 2
    concurrent_matmul: {m: 1024, n: 1024, k: 1024, dtype: fp32, flop_per_s_median: 8.0e+10}
"""


def test_linear_share_without_a_concurrent_measurement(write):
    dev = load_device(str(write(CALIBRATED_PROFILE_HEAD + CPU_CALIBRATION, "cpu.yaml")))
    assert cost.host_shares(dev, 1) == (1.0, 1.0)
    compute, bandwidth = cost.host_shares(dev, 2)
    assert float(compute) == 0.5 and bandwidth == 0.5          # 1 of 2 calibrated threads each


def test_measured_concurrent_gemm_sets_the_compute_share(write):
    dev = load_device(str(write(CALIBRATED_PROFILE_HEAD + CPU_CALIBRATION + CONCURRENT, "cpu.yaml")))
    compute, bandwidth = cost.host_shares(dev, 2)
    assert float(compute) == pytest.approx(8.0e10 / 2.0e11)    # measured under 2-way load vs alone
    assert bandwidth == 0.5
    assert float(cost.host_shares(dev, 4)[0]) == 0.5           # no measurement for 4 workers: linear


def test_gpus_are_not_shared():
    assert cost.host_shares(load_device("a100-80gb"), 8) == (1.0, 1.0)
