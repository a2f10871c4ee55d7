"""Speed of simkit itself: plan loading, predict, sweep throughput and a cold `simkit predict`.

Goals (issue 3): `simkit sweep` >= 50,000 configurations/s on one core; `simkit predict` < 0.5 s wall
from a cold start. Run: `pytest benchmarks --benchmark-autosave`; compare later runs with
`--benchmark-compare --benchmark-compare-fail=median:10%`.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from simkit.plan import load_plan
from simkit.model.step import predict
from simkit.search.sweep import run_sweep

ROOT = Path(__file__).resolve().parents[1]
PLANS = ["gpt2-124m-rtx4090.yml", "bert-large-dgx-a100.yml", "llama2-7b-fsdp-8xa100.yml", "llama3-70b-64xh100.yml"]
SWEEP = [
    "training.micro_batch_size=1,2,4,8,16,32",
    "model.n_layers=" + ",".join(str(i) for i in range(1, 101)),
    "model.seq_len=512,1024,2048,4096,8192,16384",
    "training.activation_checkpointing=none,selective,full",
    "training.precision=bf16,fp16,fp32,tf32",
]   # 43,200 combinations, all valid


PARALLEL_SWEEP = [
    "parallelism.tensor_parallel=1,2,4,8", "parallelism.pipeline_parallel=1,2,4,8", "parallelism.context_parallel=1,2,4",
    "parallelism.virtual_pipeline_stages=1,2,5", "training.micro_batch_size=1,2,4", "hardware.nodes=8,16,32,64",
    "training.global_batch_size=256,512,1024",
]   # 5,184 layouts of Llama 3 70B, 4,143 valid: the parallel keys stay vectorized (135 layouts need more
#     tensor x pipeline x context ranks than there are devices, e.g. 8 x 8 x 4 on 64 GPUs: invalid)


@pytest.mark.parametrize("name", PLANS)
def test_predict(benchmark, name):
    plan = load_plan(ROOT / "examples" / name)
    pred = benchmark(predict, plan)
    assert pred.step_time_s > 0


def test_load_plan(benchmark):
    plan = benchmark(load_plan, ROOT / "examples" / "llama3-70b-64xh100.yml")
    assert plan.n_devices == 64


def test_sweep_throughput(benchmark):
    df = benchmark.pedantic(run_sweep, args=(ROOT / "examples" / "llama2-7b-fsdp-8xa100.yml", SWEEP),
                            rounds=3, iterations=1)
    assert len(df) == 43200 and (df["reason"] == "").all()
    if benchmark.stats is not None:     # None under --benchmark-disable
        per_s = len(df) / benchmark.stats.stats.median
        benchmark.extra_info["configurations_per_s"] = per_s
        print(f"\nsweep: {per_s:,.0f} configurations/s")


def test_predict_cold_start(benchmark):
    cmd = [sys.executable, "-m", "simkit", "predict", str(ROOT / "examples" / "gpt2-124m-rtx4090.yml")]
    result = benchmark.pedantic(subprocess.run, args=(cmd,), kwargs={"capture_output": True}, rounds=5, iterations=1)
    assert result.returncode == 0


def test_sweep_parallel_layouts(benchmark):
    df = benchmark.pedantic(run_sweep, args=(ROOT / "examples" / "llama3-70b-64xh100.yml", PARALLEL_SWEEP),
                            rounds=3, iterations=1)
    assert len(df) == 5184 and int((df["reason"] == "").sum()) == 4143
    if benchmark.stats is not None:
        benchmark.extra_info["configurations_per_s"] = len(df) / benchmark.stats.stats.median
