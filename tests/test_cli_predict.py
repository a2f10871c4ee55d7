"""`simkit predict`, `sweep` and `estimate` through the real CLI."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from click.testing import CliRunner

from simkit.cli import cli

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_predict_table_shows_breakdown_memory_and_human_times():
    r = run("predict", EXAMPLES / "gpt-neox-20b-epochs.yml")
    assert r.exit_code == 0, r.output
    for text in ("Step time", "Iterations/epoch  30,534", "Epoch time", "device-hours", "forward", "backward",
                 "recompute", "optimizer step", "communication, exposed", "communication, total",
                 "Memory per device", "optimizer states", "activations"):
        assert text in r.output
    assert " d " in r.output          # epoch time in days and hours, e.g. "4 d 15 h"


def test_predict_json_and_set_override():
    base = json.loads(run("predict", EXAMPLES / "bert-large-dgx-a100.yml", "--json").output)
    more = json.loads(run("predict", EXAMPLES / "bert-large-dgx-a100.yml", "--json",
                          "--set", "model.n_layers=48").output)
    assert more["step_time_s"] > 1.8 * base["step_time_s"]
    assert set(base["breakdown_s"]) >= {"forward", "backward", "recompute", "optimizer", "communication_exposed",
                                        "communication_total", "other"}


def test_sweep_writes_every_combination_with_reasons(tmp_path):
    out = tmp_path / "sweep.csv"
    r = run("sweep", EXAMPLES / "llama2-7b-fsdp-8xa100.yml", "--vary", "training.micro_batch_size=1,2,3",
            "--vary", "training.precision=bf16,fp8", "--output", out)
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6
    by = {(row["training.micro_batch_size"], row["training.precision"]): row for row in rows}
    assert by[("1", "bf16")]["reason"] == "" and float(by[("1", "bf16")]["step_time_s"]) > 0
    # 256 sequences are not divisible by 3 x 8 devices
    assert "global_batch_size" in by[("3", "bf16")]["reason"]
    # the A100 has no fp8 tensor cores
    assert "'fp8' is not supported by device 'a100-80gb'" in by[("1", "fp8")]["reason"]


def test_sweep_unknown_key_is_one_line_error():
    r = run("sweep", EXAMPLES / "tiny-cpu.yml", "--vary", "training.micro_batchsize=1,2")
    assert r.exit_code == 2
    assert "unknown key 'training.micro_batchsize'; did you mean 'training.micro_batch_size'" in r.output


def test_estimate_six_n_d():
    # 6 x 7e9 x 1e12 = 4.2e22 FLOP at 512 x 989 TFLOP/s x 0.4 = 2.0255e17 FLOP/s -> 207,360 s = 2 d 9 h
    r = run("estimate", "--params", "7e9", "--tokens", "1e12", "--device", "h100-sxm", "--devices", "512")
    assert r.exit_code == 0, r.output
    assert "4.2e+22 FLOP" in r.output and "2 d 9 h" in r.output and "29,491 device-hours" in r.output
    assert "dimensionally wrong" in r.output


def test_sweep_non_numeric_value_gets_a_reason_not_a_crash(tmp_path):
    out = tmp_path / "s.csv"
    r = run("sweep", EXAMPLES / "tiny-cpu.yml", "--vary", "training.micro_batch_size=a,2", "--output", out)
    assert r.exit_code == 0, r.output
    rows = {row["training.micro_batch_size"]: row for row in csv.DictReader(out.open())}
    assert rows["a"]["reason"] == "training.micro_batch_size: 'a' is not a number"
    assert rows["2"]["reason"] == "" and float(rows["2"]["step_time_s"]) > 0
