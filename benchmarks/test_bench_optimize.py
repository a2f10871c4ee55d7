"""Speed of the search engine `simkit sweep` and `simkit optimize` share (issue 13).

Goals: the engine >= 1,000,000 configurations/s in-process on one core; the whole `simkit sweep` command
>= 300,000 rows/s writing Parquet on the 98,304-row grid below; `simkit optimize` over every valid layout of
a 70B model on 1,024 GPUs in < 5 s wall. Run pinned to one core, e.g.
`taskset -c 0 python -m pytest benchmarks/test_bench_optimize.py`; numbers go to extra_info (and are printed).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from simkit.search.optimize import optimize
from simkit.search.sweep import sweep_columns

ROOT = Path(__file__).resolve().parents[1]
SWEEP_PLAN = ROOT / "benchmarks" / "plans" / "gpt-24l-2048-dgx-h100.yml"
GRID = ["training.micro_batch_size=1,2,4,8,16,32", "hardware.nodes=1,2,4,8,16,32,64,128",
        "model.seq_len=512,1024,2048,4096", "training.precision=fp32,tf32,fp16,bf16", "parallelism.zero_stage=0,1,2,3",
        "model.n_layers=12,24,36,48", "model.d_model=768,1024,2048,4096",
        "training.activation_checkpointing=none,full"]   # 98,304 rows, all valid
LLAMA = ROOT / "examples" / "llama3-70b-64xh100.yml"
SEARCH = dict(devices=1024, overrides=("training.global_batch_size=1024",), top=10)
WIDE = dict(devices=1024, allow=("training.global_batch_size=512,1024,2048,4096", "training.precision=bf16,fp8"), top=10)


def _rate(benchmark, count: int, name: str) -> None:
    if benchmark.stats is not None:      # None under --benchmark-disable
        rate = count / benchmark.stats.stats.median
        benchmark.extra_info[name] = rate
        print(f"\n{name}: {rate:,.0f}")


def test_optimize_engine_throughput(benchmark):
    """Configurations searched per second in-process: the 70B space on 1,024 GPUs with four global batches and
    two precisions (every configuration checked for validity, memory and step time)."""
    result = benchmark.pedantic(optimize, args=(LLAMA,), kwargs=WIDE, rounds=3, iterations=1)
    assert result.searched > 500_000 and result.top
    _rate(benchmark, result.searched, "configurations_per_s")


def test_sweep_engine_throughput(benchmark):
    columns = benchmark.pedantic(sweep_columns, args=(SWEEP_PLAN, GRID), rounds=3, iterations=1)
    assert len(columns["reason"]) == 98_304 and (columns["reason"] == "").all()
    _rate(benchmark, 98_304, "rows_per_s")


def test_sweep_command_parquet(benchmark, tmp_path):
    out = tmp_path / "sweep.parquet"
    cmd = [sys.executable, "-m", "simkit", "sweep", str(SWEEP_PLAN), *[a for v in GRID for a in ("--vary", v)],
           "-o", str(out)]
    result = benchmark.pedantic(subprocess.run, args=(cmd,), kwargs={"capture_output": True}, rounds=3, iterations=1)
    assert result.returncode == 0, result.stderr
    _rate(benchmark, 98_304, "command_rows_per_s")


def test_optimize_command_70b_1024_gpus(benchmark):
    cmd = [sys.executable, "-m", "simkit", "optimize", str(LLAMA), "--devices", "1024",
           "--set", "training.global_batch_size=1024"]
    result = benchmark.pedantic(subprocess.run, args=(cmd,), kwargs={"capture_output": True}, rounds=3, iterations=1)
    assert result.returncode == 0, result.stderr
    if benchmark.stats is not None:
        benchmark.extra_info["wall_s"] = benchmark.stats.stats.median
