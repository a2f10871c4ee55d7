"""Smoke test of `simkit calibrate --comm --nproc 2`: two real torchrun ranks over gloo, tiny sizes
and budgets (a few seconds, mostly process start-up). Each rank verifies one result of every
collective before timing it, so a wrong emulation fails here."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

pytest.importorskip("torch")

from simkit.measure import calibrate as cal  # noqa: E402
from simkit.cli.calibrate import calibrate_cmd  # noqa: E402
from simkit.hardware import load_device  # noqa: E402
from simkit.measure.attention import AttentionShape  # noqa: E402
from simkit.measure.collectives import bus_factor, run_workers, summarize  # noqa: E402


def tiny_plan(settings, cache_bytes, memory_bytes) -> cal.Plan:
    return cal.Plan(gemm_sizes=(16, 16), dtypes=("fp32",), bandwidth_sizes=(64 * 1024,),
                    attention_shapes=(AttentionShape(batch=1, heads=1, seq_len=16, head_dim=16, dtype="fp32"),),
                    comm_sizes=(4096, 65536),
                    seconds={"matmul": 0.05, "bandwidth": 0.05, "attention": 0.05, "collectives": 0.3},
                    min_samples=3, max_samples=3, max_warmup_s=0.0, min_sample_s=1e-4)


def test_comm_nproc_2_writes_collectives_to_the_profile(monkeypatch, tmp_path):
    monkeypatch.setattr(cal, "default_plan", tiny_plan)
    out = tmp_path / "cal.yaml"
    res = CliRunner().invoke(calibrate_cmd, ["--device", "cpu", "--threads", "2", "--comm", "--nproc", "2",
                                             "--output", str(out), "--no-history"])
    assert res.exit_code == 0, res.output
    collectives = load_device(str(out)).calibration.collectives
    assert set(collectives) == {"all_reduce", "reduce_scatter", "all_gather"}
    assert collectives["all_reduce"].backend == "gloo" and collectives["all_reduce"].nproc == 2
    assert collectives["all_reduce"].bus_bandwidth_bytes_per_s > 0
    assert collectives["all_reduce"].latency_s >= 0
    assert "all-reduce busbw GB/s" in res.output
    concurrent = load_device(str(out)).calibration.concurrent_matmul
    assert concurrent["flop_per_s"] > 0
    # the concurrent GEMM is sampled before the collectives and after each of the three: 4 blocks of 9
    assert "samples: 36" in out.read_text()
    # and the measured per-size times travel with the fit
    assert [size for size, _ in collectives["all_reduce"].points] == [4096, 65536]


def test_emulated_reduce_scatter_is_named_and_consistent():
    raw = run_workers(2, device="cpu", sizes=[4096, 65536], budget_s=0.3, cores=2, min_samples=3, max_samples=3,
                      emulate_reduce_scatter=True)
    summary = summarize(raw)
    assert "all_to_all_single" in summary.ops["reduce_scatter"].algorithm
    assert summary.ops["all_reduce"].algorithm == "all_reduce (native gloo)"
    assert summary.threads_per_worker == 1
    for op, result in summary.ops.items():
        assert [p.size_bytes for p in result.points] == [4096, 65536]
        assert result.fit_max_relative_error >= 0
        for p in result.points:
            assert p.busbw_bytes_per_s == pytest.approx(p.size_bytes / p.time_s_median * bus_factor(op, 2))
