"""`simkit validate` live path: a tiny plan trained for real with torch, compared with the prediction;
and the pure helpers (variant choice, breakdown rows, suite summary) on hand-computable inputs."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

pytest.importorskip("torch")

from simkit.cli import cli  # noqa: E402
from simkit.core.errors import SimkitError  # noqa: E402
from simkit.plan import load_plan  # noqa: E402
from simkit.validate import live as v  # noqa: E402

TINY = {
    "model": {"n_layers": 2, "d_model": 64, "n_heads": 4, "n_kv_heads": 2, "d_ff": 128, "mlp": "swiglu",
              "vocab_size": 256, "seq_len": 32, "causal": True, "tied_embeddings": True, "attention": "fused"},
    "training": {"global_batch_size": 4, "micro_batch_size": 2, "grad_accum_steps": 2, "precision": "fp32",
                 "optimizer": "adamw"},
    "hardware": {"device": "cpu"},
}
TINY_YAML = """\
model: {n_layers: 2, d_model: 64, n_heads: 4, d_ff: 128, vocab_size: 256, seq_len: 32}
training: {global_batch_size: 2, micro_batch_size: 2, precision: fp32, optimizer: sgd}
hardware: {devices_per_node: 1}
"""
CPU_PROFILE = str(Path(__file__).resolve().parent.parent / "hardware" / "devices" / "cpu.yaml")
PARTS = {"forward", "backward", "optimizer", "communication_exposed", "communication_total", "other"}


def plan_with(**sections):
    raw = {k: dict(val) for k, val in TINY.items()}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    return load_plan(raw)


# ----------------------------------------------------------------------------- live, real torch
def test_live_tiny_plan_measures_and_compares():
    result = v.validate_live(plan_with(), steps=3, warmup=1, threads=1)
    measured, predicted = result["measured"], result["predicted"]
    assert len(measured["step_times_s"]) == 3 and all(t > 0 for t in measured["step_times_s"])
    assert measured["step_time_s"] > 0 and predicted["step_time_s"] > 0
    assert result["error"] == (predicted["step_time_s"] - measured["step_time_s"]) / measured["step_time_s"]
    assert set(measured["breakdown_s"]) == PARTS
    assert measured["breakdown_s"]["forward"] > 0 and measured["breakdown_s"]["backward"] > 0
    assert measured["breakdown_s"]["communication_exposed"] == 0.0          # one worker
    assert measured["environment"]["threads"] == 1 and measured["environment"]["world_size"] == 1
    step = next(r for r in result["breakdown"] if r["part"] == "step")
    assert step["measured_s"] == measured["step_time_s"] and step["error"] == result["error"]
    assert result["variant"] == []
    record = json.loads(v.record_line(result))
    assert record["plan"]["model"]["d_model"] == 64 and record["environment"]["torch_version"]


def test_live_two_process_ddp_measures_communication():
    plan = plan_with(training={"global_batch_size": 4, "micro_batch_size": 2, "grad_accum_steps": 1},
                     parallelism={"data_parallel": 2},
                     hardware={"devices_per_node": 2, "intra_node": "pcie4"})
    result = v.validate_live(plan, steps=3, warmup=1)
    env = result["measured"]["environment"]
    assert env["world_size"] == 2 and env["threads"] >= 1
    assert result["measured"]["breakdown_s"]["communication_total"] > 0   # a real gloo all-reduce was timed
    assert result["error"] == pytest.approx(
        (result["predicted"]["step_time_s"] - result["measured"]["step_time_s"]) / result["measured"]["step_time_s"])


def test_cli_live_json_and_record(runner, write, tmp_path):
    plan = write(TINY_YAML)
    record = tmp_path / "results.jsonl"
    args = ["validate", str(plan), "--profile", CPU_PROFILE, "--steps", "2", "--warmup", "1",
            "--threads", "1", "--record", str(record), "--json"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["measured"]["step_time_s"] > 0 and doc["profile"] == CPU_PROFILE
    lines = record.read_text().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["error"] == doc["error"]


def test_cli_live_text_shows_both_breakdowns(runner, write):
    result = runner.invoke(cli, ["validate", str(write(TINY_YAML)), "--profile", CPU_PROFILE,
                                 "--steps", "2", "--warmup", "0", "--threads", "1"])
    assert result.exit_code == 0, result.output
    for text in ("step time: predicted", "backward+recompute", "communication_exposed", "predicted", "measured"):
        assert text in result.stdout


# ----------------------------------------------------------------------------- CLI errors
def test_cli_needs_exactly_one_mode(runner):
    result = runner.invoke(cli, ["validate"])
    assert result.exit_code == 2
    assert "give exactly one of PLAN, --suite FOLDER or --published FILE" in result.output


def test_cli_plan_without_device_asks_for_profile(runner, write):
    path = write(TINY_YAML)
    result = runner.invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2
    assert f"{path}: no hardware.device in the plan; give --profile FILE" in result.output


def test_cli_missing_profile(runner, write):
    result = runner.invoke(cli, ["validate", str(write(TINY_YAML)), "--profile", "nope.yaml"])
    assert result.exit_code == 2 and "nope.yaml: profile file not found" in result.output


def test_unsupported_parallelism_is_refused():
    plan = plan_with(parallelism={"zero_stage": 2})
    with pytest.raises(SimkitError, match="plain DDP only: tensor_parallel and pipeline_parallel must be 1 and zero_stage 0"):
        v.validate_live(plan, steps=1, warmup=0)


def test_too_many_workers_is_refused():
    plan = plan_with(parallelism={"data_parallel": 4}, training={"global_batch_size": 16},
                     hardware={"devices_per_node": 4, "intra_node": "pcie4"})
    assert v.live_support_error(plan, "cpu", 2) == "data_parallel 4 needs 4 CPU cores; this machine has 2"


# ----------------------------------------------------------------------------- variants
class Fixed:
    def __init__(self, step_time_s):
        self.step_time_s = step_time_s


def test_fit_variant_keeps_the_plan_that_fits():
    plan = plan_with()
    variant, why = v.fit_variant(plan, memory_budget_bytes=1e12, predict_fn=lambda p: Fixed(1.0))
    assert variant is plan and why is None


def test_fit_variant_shrinks_layers_then_micro_batch_keeping_shapes():
    plan = plan_with(model={"n_layers": 8}, training={"global_batch_size": 8, "micro_batch_size": 4,
                                                      "grad_accum_steps": 2})
    # time proportional to layers x micro-batch: 8 x 4 = 32 s; the limit 1.5 s needs 1 layer x 1 sequence
    predict = lambda p: Fixed(p.model.n_layers * p.training.micro_batch_size)  # noqa: E731
    variant, why = v.fit_variant(plan, memory_budget_bytes=1e12, max_step_s=1.5, predict_fn=predict)
    assert (variant.model.n_layers, variant.training.micro_batch_size, variant.training.grad_accum_steps) == (1, 1, 2)
    assert variant.training.global_batch_size == 2
    assert (variant.model.d_model, variant.model.seq_len, variant.model.d_ff) == (64, 32, 128)
    assert "about 32.0 s per step (limit 1.5 s)" in why
    assert v.variant_changes(plan, variant) == ["model.n_layers=1", "training.micro_batch_size=1",
                                                "training.global_batch_size=2"]
    assert plan.model.n_layers == 8          # the original is untouched


def test_fit_variant_gives_up_with_a_sentence():
    with pytest.raises(SimkitError, match="even 1 layer, micro-batch 1 and no accumulation does not fit"):
        v.fit_variant(plan_with(), memory_budget_bytes=1.0, predict_fn=lambda p: Fixed(1.0))


def test_no_scale_down_names_the_variant(monkeypatch):
    from simkit.measure import training

    plan = plan_with(model={"n_layers": 2}, training={"global_batch_size": 2, "micro_batch_size": 2,
                                                      "grad_accum_steps": 1})
    smaller = plan_with(model={"n_layers": 1}, training={"global_batch_size": 2, "micro_batch_size": 2,
                                                         "grad_accum_steps": 1})
    between = (v.estimate_memory_bytes(plan) + v.estimate_memory_bytes(smaller)) / 2 / v.MEMORY_FRACTION
    monkeypatch.setattr(training, "available_memory_bytes", lambda kind: between)
    with pytest.raises(SimkitError) as err:
        v.validate_live(plan, steps=1, warmup=0, scale_down=False)
    assert "GiB per worker" in str(err.value)
    assert str(err.value).endswith("rerun without --no-scale-down to measure the variant --set model.n_layers=1")


# ----------------------------------------------------------------------------- comparison and summary
PRED = {"step_time_s": 1.2, "breakdown_s": {"forward": 0.3, "backward": 0.5, "recompute": 0.1, "optimizer": 0.1,
                                            "communication_exposed": 0.1, "communication_total": 0.4, "other": 0.1}}
MEAS = {"step_time_s": 1.0, "breakdown_s": {"forward": 0.25, "backward": 0.5, "optimizer": 0.1,
                                            "communication_exposed": 0.05, "communication_total": 0.2, "other": 0.1}}


def test_breakdown_rows_hand_computed():
    rows = {r["part"]: r for r in v.breakdown_rows(PRED, MEAS)}
    assert rows["backward+recompute"]["predicted_s"] == pytest.approx(0.6)
    assert rows["backward+recompute"]["error"] == pytest.approx(0.2)
    assert rows["forward"]["error_of_step"] == pytest.approx(0.05)
    assert rows["step"]["error"] == pytest.approx(0.2) and rows["step"]["error_of_step"] is None
    assert rows["communication_total"]["error"] == pytest.approx(1.0)


def test_suite_summary_hand_computed():
    ok = {"error": 0.2, "breakdown": v.breakdown_rows(PRED, MEAS)}
    low = {"error": -0.1, "breakdown": v.breakdown_rows(PRED, MEAS)}
    summary = v.suite_summary([ok, low, {"plan_file": "x.yml", "failure": "boom"}])
    assert summary["count"] == 2 and summary["failed"] == 1
    assert summary["mae"] == pytest.approx(0.15) and summary["max_ae"] == pytest.approx(0.2)
    assert summary["mean_error"] == pytest.approx(0.05)
    assert summary["parts"][0]["part"] == "backward+recompute"
    assert summary["parts"][0]["mean_error_of_step"] == pytest.approx(0.1)


def test_suite_plans_lists_yaml_files(tmp_path):
    (tmp_path / "b.yml").write_text("x: 1")
    (tmp_path / "a.yaml").write_text("x: 1")
    (tmp_path / "notes.txt").write_text("")
    assert [p.name for p in v.suite_plans(tmp_path)] == ["a.yaml", "b.yml"]
    with pytest.raises(SimkitError, match="no plan files"):
        v.suite_plans(tmp_path / "missing")


def test_validation_plans_cover_the_required_variations():
    from pathlib import Path

    from simkit.core.yamlio import read_yaml

    plans = [read_yaml(p).data for p in v.suite_plans(Path(__file__).parent.parent / "examples" / "validation")]
    seen = lambda section, key: {p[section].get(key) for p in plans}  # noqa: E731
    assert len(plans) >= 8
    assert {1, 4} <= seen("training", "grad_accum_steps") and {"fp32", "bf16"} <= seen("training", "precision")
    assert {1, 2} <= seen("parallelism", "data_parallel") and len(seen("training", "micro_batch_size")) >= 2
    assert len(seen("model", "d_model")) >= 2 and len(seen("model", "n_layers")) >= 2
    ddp_accum = [p for p in plans if p["parallelism"]["data_parallel"] == 2]
    assert {p["training"]["grad_accum_steps"] for p in ddp_accum} >= {1, 4}


PROFILE = """\
name: test-cpu-{threads}
kind: device
memory_gib: {{value: 16, source: "measured by simkit calibrate on testhost 2026-01-01"}}
memory_bandwidth_gb_per_s: {{value: 20, source: "measured by simkit calibrate on testhost 2026-01-01"}}
peak_tflops:
  fp32: {{value: 0.5, dense: true, source: "measured by simkit calibrate on testhost 2026-01-01"}}
calibration:
  environment: {{threads: {threads}}}
"""


def test_choose_profile_matches_the_worker_threads(write):
    two, one = (str(write(PROFILE.format(threads=n), f"cal-{n}.yaml")) for n in (2, 1))
    assert v.choose_profile([two, one], 1) == one
    assert v.choose_profile([two, one], 2) == two
    assert v.choose_profile([two, one], 8) == two          # none matches: the first
    plan = plan_with(parallelism={"data_parallel": 2}, training={"global_batch_size": 8},
                     hardware={"devices_per_node": 2, "intra_node": "pcie4"})
    assert v.worker_threads(plan, 3) == 3
    from simkit.measure import cpu_count
    assert v.worker_threads(plan) == max(1, cpu_count() // 2)


def test_cli_suite_summarizes_and_lists_failures(runner, tmp_path):
    folder = tmp_path / "suite"
    folder.mkdir()
    (folder / "a-tiny.yml").write_text(TINY_YAML)
    (folder / "b-zero.yml").write_text(TINY_YAML + "parallelism: {zero_stage: 1}\n")
    args = ["validate", "--suite", str(folder), "--profile", CPU_PROFILE, "--steps", "2", "--warmup", "0",
            "--threads", "1"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "a-tiny" in result.stdout and "failed: " in result.stdout
    assert "1 plans measured, 1 failed: MAE (mean |error|)" in result.stdout
    doc = json.loads(runner.invoke(cli, args + ["--json"]).stdout)
    assert doc["summary"]["count"] == 1 and doc["summary"]["failed"] == 1
    assert doc["results"][1]["failure"].startswith(f"{folder / 'b-zero.yml'}: live validation trains with plain DDP only")


# ----------------------------------------------------------------------------- machine speed probe
def test_worker_config_probes_with_the_profiles_dtype_and_threads(write):
    bf16 = '  bf16: {value: 0.25, dense: true, source: "measured by simkit calibrate on testhost 2026-01-01"}\n'
    profile = str(write(PROFILE.format(threads=2).replace("calibration:", bf16 + "calibration:"), "cal-2.yaml"))
    config = v.worker_config(plan_with(hardware={"device": profile}, training={"precision": "bf16"}),
                             steps=1, warmup=0, threads=1, device="cpu")
    assert (config["probe_dtype"], config["probe_threads"]) == ("bf16", 2)
    config = v.worker_config(plan_with(), steps=1, warmup=0, threads=1, device="cpu")   # catalogue: nothing to hold against
    assert (config["probe_dtype"], config["probe_threads"]) == (None, None)


def test_machine_speed_is_the_probe_over_the_profiles_rate(write):
    from simkit.model import cost

    plan = plan_with(hardware={"device": str(write(PROFILE.format(threads=2), "cal-2.yaml"))})
    expected = float(cost.matmul_rate(plan.device, "fp32", 1024, 1024, 1024))
    probe = {"dtype": "fp32", "shape": [1024, 1024, 1024], "flop_per_s_median": 0.8 * expected, "samples": 9}
    assert v.machine_speed(plan, {"probe": probe}) == pytest.approx(0.8)
    assert v.machine_speed(plan, {}) is None
    assert v._speed_note(0.8, {"probe": probe}) == [
        "the machine ran at 0.80x the profile's speed (a fp32 1024x1024x1024 GEMM timed right before and after "
        "the steps); at that speed a compute-bound step takes +25% longer than predicted, a difference from the "
        "machine, not the model"]
    assert v._speed_note(0.97, {"probe": probe}) == []          # within 5%: no note


def test_suite_summary_divides_by_the_machine_speed_as_a_diagnostic():
    slow = {"error": -0.2, "breakdown": [], "machine_speed": 0.8,
            "predicted": {"step_time_s": 1.0}, "measured": {"step_time_s": 1.25}}
    fast = {"error": 0.1, "breakdown": [], "machine_speed": None,
            "predicted": {"step_time_s": 1.1}, "measured": {"step_time_s": 1.0}}
    speed = v.suite_summary([slow, fast])["speed"]
    assert speed["count"] == 1 and speed["median"] == 0.8
    assert speed["adjusted_mae"] == pytest.approx(0.0)      # 1.0 / 0.8 = 1.25: all of the error was the machine
    assert v.suite_summary([fast])["speed"] is None


def test_live_run_with_a_calibrated_profile_probes_the_machine(write):
    plan = plan_with(hardware={"device": str(write(PROFILE.format(threads=1), "cal-1.yaml"))})
    result = v.validate_live(plan, steps=2, warmup=1, threads=1)
    probe = result["measured"]["probe"]
    assert probe["dtype"] == "fp32" and probe["samples"] >= 3 and probe["flop_per_s_median"] > 0
    assert result["machine_speed"] > 0
    assert json.loads(v.record_line(result))["machine_speed"] == result["machine_speed"]
