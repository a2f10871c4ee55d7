"""simkit calibrate: statistics, formulas, planning, the profile and history record, the CLI.

Measurements run with tiny shapes and budgets (a fraction of a second); nothing here asserts a speed."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")

from simkit.measure import calibrate as cal  # noqa: E402
from simkit.cli.calibrate import calibrate_cmd  # noqa: E402
from simkit.hardware import load_device  # noqa: E402
from simkit.measure import Target, gemm, timing  # noqa: E402
from simkit.measure.attention import AttentionShape, backward_flop, forward_flop  # noqa: E402
from simkit.measure.bandwidth import bytes_moved, elements  # noqa: E402
from simkit.measure.timing import Budget, Rate, median_iqr  # noqa: E402

KIB = 1024


def tiny_plan(**overrides) -> cal.Plan:
    values = dict(gemm_sizes=(16, 64), dtypes=("fp32", "bf16"), bandwidth_sizes=(64 * KIB, 256 * KIB),
                  attention_shapes=(AttentionShape(batch=1, heads=2, seq_len=32, head_dim=16, dtype="fp32"),),
                  comm_sizes=(4 * KIB, 64 * KIB),
                  seconds={"matmul": 0.3, "bandwidth": 0.15, "attention": 0.1, "collectives": 0.5},
                  min_samples=3, max_samples=5, max_warmup_s=0.01, min_sample_s=1e-4)
    values.update(overrides)
    return cal.Plan(**values)


@pytest.fixture(scope="module")
def result() -> cal.CalibrationResult:
    return cal.run(cal.Settings(device="cpu", quick=True, threads=1), plan=tiny_plan())


# ----------------------------------------------------------------------------- statistics
def test_median_and_iqr_of_known_samples():
    # numpy/R type-7 percentiles of 1..9: q25 = 3, q50 = 5, q75 = 7
    assert median_iqr([9, 1, 8, 2, 7, 3, 6, 4, 5]) == (5.0, 4.0)
    # 4 samples: q25 at position 0.75 -> 1.75, q75 at 2.25 -> 3.25, median 2.5
    assert median_iqr([1, 2, 3, 4]) == (2.5, 1.5)
    assert median_iqr([7.0]) == (7.0, 0.0)
    with pytest.raises(ValueError):
        median_iqr([])


def test_rate_from_seconds_keeps_raw_samples():
    rate = Rate.from_seconds(1e9, (0.5, 1.0, 2.0), "flop_per_s")
    assert rate.samples == (2e9, 1e9, 5e8)
    assert rate.median == 1e9
    assert rate.iqr == pytest.approx(1.5e9 - 7.5e8)
    assert rate.noisy


def test_time_call_repeats_short_calls_to_fill_a_sample(monkeypatch):
    clock = {"now": 0.0}
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock["now"])

    def call():  # every call "takes" 1 ms on the fake clock
        clock["now"] += 1e-3

    budget = Budget(warmup_s=0.0, measure_s=0.05, min_samples=3, max_samples=100, min_sample_s=4e-3)
    seconds, number = timing.time_call(call, Target(kind="cpu", threads=1), budget)
    assert number == 4
    assert all(s == pytest.approx(1e-3) for s in seconds)
    assert len(seconds) == 13  # 13 samples of 4 ms pass 0.05 s


def test_time_call_stops_a_slow_call_at_twice_the_budget(monkeypatch):
    clock = {"now": 0.0}
    monkeypatch.setattr(timing.time, "perf_counter", lambda: clock["now"])

    def call():  # 1 s per call against a 0.1 s budget that asks for 10 samples
        clock["now"] += 1.0

    budget = Budget(warmup_s=0.0, measure_s=0.1, min_samples=10, max_samples=100)
    seconds, _ = timing.time_call(call, Target(kind="cpu", threads=1), budget)
    assert len(seconds) == 3


def test_measuring_sets_threads_and_restores_them():
    before = torch.get_num_threads()
    with timing.configured(Target(kind="cpu", threads=1)):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_interference_counts_other_programs_and_steal():
    from simkit.measure import CpuTicks, interference

    before, after = CpuTicks(100.0, 50.0, 0.0, 10.0), CpuTicks(120.0, 55.0, 1.0, 20.0)
    # 20 s of CPU time: 5 idle, 1 stolen, 10 ours, so others used 4
    assert interference(before, after) == {"cpu_share_used_by_others": 0.2, "cpu_share_stolen": 0.05}
    assert interference(None, after) == {}


def test_a_busy_machine_is_reported(result):
    import dataclasses

    busy = dataclasses.replace(result, environment={**result.environment, "cpu_share_used_by_others": 0.5,
                                                    "cpu_share_stolen": 0.0})
    assert any("other programs used 50% of the CPU time" in w for w in cal._noisy(busy))


# ----------------------------------------------------------------------------- formulas
def test_bus_bandwidth_follows_nccl_tests():
    from simkit.measure.collectives import algbw, bus_factor, busbw

    # nccl-tests doc/PERFORMANCE.md: 1 GB all-reduce in 0.01 s on 8 ranks: algbw 100 GB/s,
    # busbw 100 * 2*7/8 = 175 GB/s; reduce-scatter / all-gather busbw 100 * 7/8 = 87.5 GB/s.
    assert algbw(1e9, 0.01) == pytest.approx(1e11)
    assert busbw("all_reduce", 8, 1e9, 0.01) == pytest.approx(1.75e11)
    assert busbw("reduce_scatter", 8, 1e9, 0.01) == pytest.approx(8.75e10)
    assert busbw("all_gather", 8, 1e9, 0.01) == pytest.approx(8.75e10)
    assert bus_factor("all_reduce", 2) == 1.0
    with pytest.raises(ValueError):
        bus_factor("all_reduce", 1)


def test_alpha_beta_fit_recovers_latency_and_bandwidth():
    from simkit.measure.collectives import fit_alpha_beta

    sizes = [4096 * 4**i for i in range(8)]
    latency, busbw = 50e-6, 3e9  # t = 50 us + 2(n-1)/n * size / 3 GB/s, n = 4
    times = [latency + 1.5 * s / busbw for s in sizes]
    assert fit_alpha_beta("all_reduce", 4, sizes, times) == pytest.approx((latency, busbw), rel=1e-6)


def test_alpha_beta_fit_clamps_a_negative_latency_at_zero():
    from simkit.measure.collectives import fit_alpha_beta

    sizes = [1e6, 1e7, 1e8]  # times 1 us below a pure 1 GB/s line: the unclamped latency is negative
    latency, bandwidth = fit_alpha_beta("all_gather", 2, sizes, [0.5 * s / 1e9 - 1e-6 for s in sizes])
    assert latency == 0.0
    assert bandwidth == pytest.approx(1e9, rel=0.01)


def test_summarize_turns_worker_timings_into_bandwidths():
    from simkit.measure.collectives import summarize

    # 4 ranks; 1 MiB all-gathered in 1 ms: algbw 1.048576 GB/s, busbw x 3/4; 16 MiB in 10 ms
    raw = {"backend": "gloo", "nproc": 4, "threads_per_worker": 1, "ops": {"all_gather": {
        "algorithm": "all_gather (native gloo)",
        "points": [{"bytes": 2**20, "seconds": [1e-3, 2e-3, 1e-3]}, {"bytes": 2**24, "seconds": [1e-2] * 3}]}}}
    result = summarize(raw).ops["all_gather"]
    small, large = result.points
    assert small.time_s_median == 1e-3 and small.time_s_iqr == pytest.approx(5e-4)
    assert small.algbw_bytes_per_s == pytest.approx(2**20 / 1e-3)
    assert small.busbw_bytes_per_s == pytest.approx(0.75 * 2**20 / 1e-3)
    assert small.busbw_samples == pytest.approx((0.75 * 2**20 / 1e-3, 0.75 * 2**20 / 2e-3, 0.75 * 2**20 / 1e-3))
    # two points: the line passes through both exactly
    slope = (1e-2 - 1e-3) / (0.75 * (2**24 - 2**20))
    assert result.bus_bandwidth_bytes_per_s == pytest.approx(1 / slope)
    assert result.latency_s == pytest.approx(1e-3 - 0.75 * 2**20 * slope)
    assert result.fit_max_relative_error == pytest.approx(0, abs=1e-9)


def test_attention_flops_follow_flash_attention_convention():
    shape = AttentionShape(batch=4, heads=8, seq_len=512, head_dim=64, dtype="fp32", causal=False)
    assert forward_flop(shape) == 4 * 4 * 8 * 512 * 512 * 64
    causal = AttentionShape(batch=4, heads=8, seq_len=512, head_dim=64, dtype="fp32")
    assert forward_flop(causal) == forward_flop(shape) / 2
    assert backward_flop(causal) == 2.5 * forward_flop(causal)
    assert causal.label == "fp32.b4h8s512d64"


def test_bandwidth_counts_stream_bytes():
    n = elements("triad", 3 * 4 * 1000)
    assert n == 1000 and bytes_moved("triad", n) == 12000  # 2 reads + 1 write of 4 bytes
    assert bytes_moved("copy", 1000) == 8000
    assert bytes_moved("optimizer_step", 1000) == 28000  # param R+W, grad R, exp_avg R+W, exp_avg_sq R+W


# ----------------------------------------------------------------------------- planning
def test_gemm_grid_holds_squares_and_transformer_shapes():
    shapes = gemm.gemm_shapes(2048)
    assert (64, 64, 64) in shapes and (2048, 2048, 2048) in shapes
    assert (2048, 2048, 512) in shapes and (2048, 512, 2048) in shapes and (512, 2048, 2048) in shapes
    assert shapes == sorted(shapes, key=gemm.gemm_flop)


def test_plan_shape_halves_until_the_calls_fit():
    assert gemm.plan_shape((2048, 2048, 2048), None, 1.0, 6) == (2048, 2048, 2048)
    # 6 calls at 1 GFLOP/s in 1 s: 2*256^3*6 = 0.2 GFLOP fits, 512^3 (1.6 GFLOP) does not
    assert gemm.plan_shape((2048, 2048, 2048), 1e9, 1.0, 6) == (256, 256, 256)
    assert gemm.plan_shape((64, 64, 64), 1.0, 1e-9, 6) == (16, 16, 16)  # never below 16


def test_sweep_extrapolates_shapes_that_do_not_fit(monkeypatch):
    def fake_measure(target, dtype, shape, budget):
        return Rate.from_seconds(gemm.gemm_flop(shape), (gemm.gemm_flop(shape) / 1e9,) * 3, "flop_per_s")

    monkeypatch.setattr(gemm, "measure_gemm", fake_measure)
    budget = lambda s: Budget(warmup_s=0.0, measure_s=0.1, min_samples=5)  # noqa: E731
    rows = gemm.sweep(Target(kind="cpu", threads=1), ["bf16"], [(64, 64, 64), (1024, 1024, 1024)], 1.0,
                      item_budget=budget)
    by_shape = {r.shape: r for r in rows}
    assert not by_shape[64, 64, 64].extrapolated
    assert not by_shape[128, 128, 128].extrapolated  # measured in place of 1024^3 and kept
    big = by_shape[1024, 1024, 1024]
    assert big.extrapolated and big.measured_shape == (128, 128, 128)
    assert big.rate is by_shape[128, 128, 128].rate


def test_quick_plan_fits_in_a_minute_and_reaches_memory():
    plan = cal.default_plan(cal.Settings(device="cpu", quick=True, threads=2), 260 * 2**20, 24 * 2**30)
    assert cal.planned_seconds(plan, cal.Settings(device="cpu", quick=True, threads=2)) <= 45
    assert max(plan.bandwidth_sizes) >= 2 * 260 * 2**20
    assert plan.gemm_sizes == (64, 2048)
    full = cal.default_plan(cal.Settings(device="cpu", threads=2), 260 * 2**20, 24 * 2**30)
    assert cal.planned_seconds(full, cal.Settings(device="cpu", threads=2)) <= 260
    assert full.gemm_sizes == (64, 4096)


# ----------------------------------------------------------------------------- profile and history
def test_profile_round_trips_through_load_device(result, tmp_path):
    path = tmp_path / "cal.yaml"
    path.write_text(cal.profile_text(result))
    device = load_device(str(path))
    best = cal.best_peaks(result)
    assert set(device.peak_flop_per_s) == {"fp32", "bf16"}
    assert device.peak_flop_per_s["fp32"] == pytest.approx(best["fp32"].rate.median, rel=1e-3)
    assert device.efficiency("fp32") == 1.0
    assert device.memory_bytes == pytest.approx(result.environment["memory_bytes"], rel=1e-3)
    assert device.sources["peak_tflops.fp32"].startswith("measured by simkit calibrate on ")
    calibration = device.calibration
    assert calibration.environment["threads"] == 1
    assert {p.m for p in calibration.matmul["fp32"]} == {16, 32, 64}
    assert set(calibration.memory_bandwidth) == {"copy", "triad", "optimizer_step", "first_touch", "cross_entropy", "cross_entropy_fused",
                                                 "gelu", "layer_norm"}
    assert calibration.attention[0]["seq_len"] == 32
    assert calibration.collectives == {}


def test_memory_bandwidth_comes_from_the_largest_working_sets(result):
    # the tiny plan's sizes are all below the cache, so the largest size decides
    best = cal.best_bandwidth(result)
    assert best.working_set_bytes == 256 * KIB and best.pattern in ("copy", "triad")


def test_history_record_follows_the_design(result):
    record = cal.history_record(result)
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", record["id"])
    assert set(record) == {"id", "timestamp", "git_revision", "fingerprint", "settings", "benchmarks"}
    assert set(record["fingerprint"]) == {"host", "device_name", "driver_version", "cuda_version",
                                          "torch_version", "threads"}
    names = record["benchmarks"]
    for name in ("matmul.fp32.64x64x64", "bandwidth.triad.256KiB", "bandwidth.optimizer_step.64KiB",
                 "attention.fwd.fp32.b1h2s32d16", "attention.bwd.fp32.b1h2s32d16"):
        assert name in names
    entry = names["matmul.fp32.64x64x64"]
    assert entry["unit"] == "flop_per_s" and entry["higher_is_better"] is True
    assert entry["median"] == pytest.approx(median_iqr(entry["samples"])[0], rel=1e-4)
    json.dumps(record)  # one JSON line in the store


def test_size_labels():
    assert [cal.size_label(s) for s in (4096, 64 * 2**20, 2**30, 1000)] == ["4KiB", "64MiB", "1GiB", "1000B"]


@pytest.mark.parametrize("name, expected", [
    ("NVIDIA H100 80GB HBM3", "h100-sxm"), ("NVIDIA H100 PCIe", "h100-pcie"),
    ("NVIDIA A100-SXM4-80GB", "a100-80gb"), ("NVIDIA A100-SXM4-40GB", "a100-40gb"),
    ("Tesla V100-SXM2-16GB", None)])
def test_cuda_names_match_catalogue_entries(name, expected):
    names = ["a100-40gb", "a100-80gb", "h100-pcie", "h100-sxm", "h200", "cpu"]
    assert cal.match_catalogue(name, names) == expected


@pytest.mark.parametrize("name, expected", [
    ("NVIDIA H100 80GB HBM3", "h100-sxm"), ("NVIDIA A100-SXM4-40GB", "a100-40gb"), ("NVIDIA L40S", "l40s"),
    ("NVIDIA GeForce RTX 4090", "rtx-4090"), ("Tesla T4", "t4"), ("NVIDIA A10", "a10")])
def test_cuda_names_match_the_shipped_catalogue(name, expected):
    from simkit.hardware import catalogue_names

    names = catalogue_names("device")
    if expected not in names:
        pytest.skip(f"the catalogue has no {expected}")
    assert cal.match_catalogue(name, names) == expected


# ----------------------------------------------------------------------------- the CLI
@pytest.fixture
def tiny_cli(monkeypatch):
    """The CLI with the tiny plan in place of the real one."""
    monkeypatch.setattr(cal, "default_plan", lambda settings, cache, memory: tiny_plan())
    return CliRunner()


def test_cli_writes_a_loadable_profile_and_prints_a_summary(tiny_cli, tmp_path):
    out = tmp_path / "cal.yaml"
    res = tiny_cli.invoke(calibrate_cmd, ["--device", "cpu", "--threads", "1", "--output", str(out), "--no-history"])
    assert res.exit_code == 0, res.output
    assert load_device(str(out)).calibration is not None
    assert f"wrote {out}" in res.output
    assert re.search(r"fp32 matmul TFLOP/s\s+\d", res.output)
    assert "memory bandwidth GB/s" in res.output


def test_cli_appends_a_history_record(tiny_cli, tmp_path, monkeypatch):
    from simkit.track.history import load_records

    history = str(tmp_path / "history.jsonl")
    res = tiny_cli.invoke(calibrate_cmd, ["--device", "cpu", "--threads", "1", "--output", str(tmp_path / "c.yaml"),
                                          "--history", history])
    assert res.exit_code == 0, res.output
    (record,), problems = load_records(history)
    assert not problems
    assert f"history: appended record {record['id']} to {history}" in res.output
    assert "matmul.fp32.16x16x16" in record["benchmarks"]
    assert record["settings"] == {"device": "cpu", "quick": False, "threads": 1, "comm": False, "nproc": None}


def test_cli_skips_history_when_the_module_is_missing(tiny_cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "simkit.track.history", None)  # import fails as if the file were absent
    res = tiny_cli.invoke(calibrate_cmd, ["--device", "cpu", "--threads", "1", "--output", str(tmp_path / "c.yaml")])
    assert res.exit_code == 0, res.output
    assert "history not recorded" in res.output


def test_interrupt_leaves_an_earlier_profile_untouched(tiny_cli, tmp_path, monkeypatch):
    out = tmp_path / "cal.yaml"
    out.write_text("earlier profile\n")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    from simkit.measure import attention  # measured after matmul and bandwidth: mid-run

    monkeypatch.setattr(attention, "sweep", interrupted)
    res = tiny_cli.invoke(calibrate_cmd, ["--device", "cpu", "--threads", "1", "--output", str(out), "--no-history"])
    assert res.exit_code == 130
    assert out.read_text() == "earlier profile\n"
    assert os.listdir(tmp_path) == ["cal.yaml"]  # no temporary file left behind
    assert f"interrupted: {out} was not written" in res.output


def test_sigterm_leaves_an_earlier_profile_untouched(tmp_path):
    out, started = tmp_path / "cal.yaml", tmp_path / "started"
    out.write_text("earlier profile\n")
    script = textwrap.dedent(f"""
        import pathlib, sys, time
        import simkit.measure.calibrate as cal
        from simkit.measure import attention
        def slow(*args, **kwargs):
            pathlib.Path({str(started)!r}).touch()
            time.sleep(60)
        attention.sweep = slow
        cal.default_plan = lambda *a: cal.Plan(gemm_sizes=(16, 16), dtypes=("fp32",), bandwidth_sizes=(4096,),
            attention_shapes=(), seconds={{"matmul": 0.05, "bandwidth": 0.05, "attention": 0, "collectives": 0}},
            min_samples=3, max_samples=3, max_warmup_s=0.0, min_sample_s=1e-4)
        sys.argv = ["simkit", "calibrate", "--device", "cpu", "--threads", "1", "--no-history", "--output", {str(out)!r}]
        from simkit.cli import main
        main()
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not started.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 143, stderr  # 128 + SIGTERM
    assert out.read_text() == "earlier profile\n"
    assert "interrupted:" in stderr.splitlines()[-1]


@pytest.mark.parametrize("args, message", [
    (["--threads", "0"], "--threads: 0 must be at least 1"),
    (["--nproc", "2"], "--nproc: --nproc only applies with --comm"),
    (["--comm", "--nproc", "1"], "--nproc: 1 must be at least 2"),
    (["--device", "cuda"], "--device: CUDA is not available"),
])
def test_cli_rejects_bad_flags_with_one_line(args, message, tmp_path):
    from simkit.cli import cli

    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = CliRunner().invoke(cli, ["calibrate", "--output", str(tmp_path / "c.yaml"), *args])
    assert res.exit_code == 2
    assert message in res.output
    assert len(res.output.strip().splitlines()) == 1, res.output  # the error alone: no progress bar
    assert "Traceback" not in res.output
