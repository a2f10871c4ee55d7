"""`simkit fit` and simkit.search.fit: fitting recovers multipliers the model itself was run with, the limits
(one parameter per run), the overlay it writes, and the CLI's error lines."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import yaml

from simkit.cli import cli
from simkit.core.errors import SimkitError
from simkit.hardware import load_device
from simkit.model.step import predict
from simkit.plan import load_plan
from simkit.search.fit import Evaluator, cv_folds, few_shot_pick, fit, held_out


def plan_dict(n_layers=12, d_model=1024, mbs=4, seq=2048, device="a100-80gb", gpus=1, ckpt="none"):
    hw = {"device": device, "devices_per_node": gpus}
    if gpus > 1:
        hw["intra_node"] = "nvlink3"
    return {"model": {"n_layers": n_layers, "d_model": d_model, "n_heads": d_model // 64, "vocab_size": 50304,
                      "seq_len": seq},
            "training": {"global_batch_size": mbs * gpus * 2, "micro_batch_size": mbs, "precision": "bf16",
                         "activation_checkpointing": ckpt},
            "hardware": hw}


SHAPES = [dict(n_layers=4, d_model=512, mbs=8, seq=512), dict(n_layers=24, d_model=2048, mbs=2),
          dict(n_layers=12, d_model=1024, mbs=4, seq=1024), dict(n_layers=32, d_model=4096, mbs=1, ckpt="full"),
          dict(n_layers=8, d_model=768, mbs=16, seq=256), dict(n_layers=16, d_model=1536, mbs=4, seq=4096)]


def synthetic(values, shapes=SHAPES, **kw):
    """Plans and the step times the model gives them with its device's multipliers set to `values`."""
    plans = [load_plan(plan_dict(**s, **kw)) for s in shapes]
    return plans, Evaluator(plans).step_times(values)


def test_evaluator_matches_predict_and_applies_multipliers():
    plans, _ = synthetic({})
    ev = Evaluator(plans)
    assert np.allclose(ev.step_times({}), [predict(p).step_time_s for p in plans], rtol=1e-12)
    slow = [predict(dataclasses.replace(p, device=dataclasses.replace(p.device, fitted={"gemm": 0.8}))).step_time_s
            for p in plans]
    assert np.allclose(ev.step_times({"gemm": 0.8}), slow, rtol=1e-12)


def test_fit_recovers_a_scaled_gemm_rate():
    plans, measured = synthetic({"gemm": 0.85})
    result = fit(Evaluator(plans), measured, ["gemm"])
    assert result.names == ["gemm"]
    assert result.values["gemm"] == pytest.approx(0.85, rel=0.01)
    assert np.max(np.abs(result.after)) < 0.005 < np.max(np.abs(result.before))


def test_fit_of_two_multipliers_finds_them_within_their_standard_errors():
    # attention is a small part of these steps: the prior (log-sd 0.3) holds it back more than gemm
    truth = {"gemm": 0.85, "attention": 0.7}
    plans, measured = synthetic(truth)
    result = fit(Evaluator(plans), measured, ["gemm", "attention"])
    assert result.values["gemm"] == pytest.approx(0.85, rel=0.03)
    for name, value in truth.items():
        assert abs(result.values[name] - value) < 2 * result.stderr[name]
    assert 1.0 > result.values["attention"] > 0.7 and np.max(np.abs(result.after)) < 0.03


def test_one_run_fits_one_parameter_the_most_influential():
    plans, measured = synthetic({"gemm": 0.9}, shapes=SHAPES[1:2])
    result = fit(Evaluator(plans), measured)
    assert result.names == ["gemm"]
    assert "at most one parameter per run (1 run)" in result.skipped["attention"]
    assert result.values["gemm"] == pytest.approx(0.9, rel=0.01)


def test_network_and_overlap_are_skipped_without_communication():
    plans, measured = synthetic({})
    result = fit(Evaluator(plans), measured)
    assert "network" in result.skipped and "overlap" in result.skipped
    assert len(result.names) <= len(plans)


def test_strict_fit_refuses_more_parameters_than_runs():
    plans, measured = synthetic({}, shapes=SHAPES[:2])
    with pytest.raises(SimkitError, match=r"2 runs cannot fit 3 parameters \(gemm, attention, memory\)"):
        fit(Evaluator(plans), measured, ["gemm", "attention", "memory"], strict=True)


def test_robust_loss_keeps_one_odd_run_from_dragging_the_fit():
    plans, measured = synthetic({"gemm": 0.85})
    measured = measured.copy()
    measured[0] *= 1.6                      # one run 60 % off (a bad measurement)
    result = fit(Evaluator(plans), measured, ["gemm"])
    assert result.values["gemm"] == pytest.approx(0.85, rel=0.04)


def test_held_out_predicts_each_fold_from_the_others():
    plans, measured = synthetic({"gemm": 0.85})
    folds, label = cv_folds(len(plans))
    assert label == "leave-one-out" and len(folds) == len(plans)
    residuals, fits = held_out(plans, measured, folds, ["gemm"])
    assert np.max(np.abs(residuals)) < 0.01
    assert all(f.values["gemm"] == pytest.approx(0.85, rel=0.01) for f in fits)
    folds, label = cv_folds(25)
    assert label == "10-fold cross-validation" and sorted(np.concatenate(folds).tolist()) == list(range(25))


def test_few_shot_pick_is_smallest_median_largest():
    sizes = [5.0, 1.0, 3.0, 9.0, 7.0, 2.0]
    assert few_shot_pick(sizes, [1.0] * 6, list("abcdef")) == [1, 2, 3]      # sizes 1, 3 (median rank), 9


# ----------------------------------------------------------------------------- the CLI
CASE = """\
- id: {id}
  source: {source}
  model: {{n_layers: {n_layers}, d_model: {d_model}, n_heads: {heads}, vocab_size: 50304, seq_len: {seq}}}
  training: {{global_batch_size: {gbs}, micro_batch_size: {mbs}, precision: bf16}}
  hardware: {{device: {device}}}
  measured: {{step_time_s: {step}}}
"""


def cases_text(measured, shapes=SHAPES, device="a100-80gb", source="my cluster"):
    return "".join(CASE.format(id=f"run-{i}", source=source, n_layers=s["n_layers"], d_model=s["d_model"],
                               heads=s["d_model"] // 64, seq=s.get("seq", 2048), gbs=2 * s["mbs"], mbs=s["mbs"],
                               device=device, step=float(t))
                   for i, (s, t) in enumerate(zip(shapes, measured)) if s.get("ckpt", "none") == "none")


def test_cli_fit_writes_an_overlay_that_plans_use(runner, write, tmp_path):
    shapes = [s for s in SHAPES if "ckpt" not in s]
    _, measured = synthetic({"gemm": 0.8}, shapes=shapes)
    runs = write(cases_text(measured, shapes), "runs.yaml")
    out = tmp_path / "fitted.yaml"
    r = runner.invoke(cli, ["fit", str(runs), "--output", str(out), "--params", "gemm", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["parameters"][0]["name"] == "gemm" and doc["parameters"][0]["value"] == pytest.approx(0.8, rel=0.01)
    assert doc["errors"]["defaults"]["mape"] > 0.1 > 0.005 > doc["errors"]["fitted_in_sample"]["mape"]
    assert doc["errors"]["held_out_method"] == "leave-one-out"
    device = load_device(str(out))
    assert device.fitted == {"gemm": pytest.approx(0.8, rel=0.01)} and device.name == "a100-80gb"
    assert device.sources["fitted.gemm"].startswith(f"simkit fit on {len(shapes)} runs (runs.yaml, ")
    assert device.peak("bf16") == load_device("a100-80gb").peak("bf16")
    data = yaml.safe_load(out.read_text())
    assert data["fitted"]["gemm"]["runs"] == len(shapes) and data["fitted"]["gemm"]["stderr"] >= 0
    plan = load_plan(plan_dict(**shapes[0]), [f"hardware.device={out}"])
    assert predict(plan).step_time_s == pytest.approx(measured[0], rel=0.01)


def test_cli_fit_text_shows_parameters_errors_and_the_file(runner, write, tmp_path):
    shapes = [s for s in SHAPES if "ckpt" not in s][:3]
    _, measured = synthetic({"gemm": 0.9}, shapes=shapes)
    out = tmp_path / "fitted.yaml"
    r = runner.invoke(cli, ["fit", str(write(cases_text(measured, shapes), "runs.yaml")), "-o", str(out)])
    assert r.exit_code == 0, r.output
    for text in ("simkit fit: 3 runs on a100-80gb", "parameter", "stderr", "prior", "log-sd 0.30",
                 "defaults (no fit)", "fitted, in-sample", "fitted, leave-one-out", f"wrote {out}",
                 "not fitted: network (no run's step depends on its communication"):
        assert text in r.output
    assert out.exists()


def error_line(r) -> str:
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1, r.output
    return lines[0]


def test_cli_fit_without_runs(runner):
    line = error_line(runner.invoke(cli, ["fit", "--output", "x.yaml"]))
    assert line.startswith("error: no runs given: simkit fit RUNS... --output FILE, with RUNS files of "
                           "published-cases YAML, `simkit validate --record` JSONL, or CSV/Parquet")


def test_cli_fit_runs_on_two_devices_without_choosing(runner, write, tmp_path):
    text = cases_text([1.0, 2.0], SHAPES[:2]) + cases_text([1.0], SHAPES[:1], device="h100-sxm").replace(
        "run-0", "other-0")
    r = runner.invoke(cli, ["fit", str(write(text, "runs.yaml")), "-o", str(tmp_path / "f.yaml")])
    assert error_line(r) == ("error: runs on 2 devices: a100-80gb (2 runs), h100-sxm (1 run); say which to fit "
                             "with --device NAME")
    assert not (tmp_path / "f.yaml").exists()
    r = runner.invoke(cli, ["fit", str(write(text, "runs.yaml")), "-o", str(tmp_path / "f.yaml"), "--device",
                            "h100-sxm", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["runs"] == 1 and json.loads(r.output)["ignored_runs"] == 2


def test_cli_fit_names_the_run_whose_plan_is_invalid(runner, write, tmp_path):
    text = cases_text([1.0, 2.0], SHAPES[:2]).replace("n_heads: 32", "n_heads: 30")
    path = write(text, "runs.yaml")
    line_no = next(i for i, line in enumerate(text.splitlines(), 1) if "n_heads: 30" in line)
    r = runner.invoke(cli, ["fit", str(path), "-o", str(tmp_path / "f.yaml")])
    assert error_line(r) == (f"error: {path}:{line_no}: model.n_heads: run 'run-1': 30 does not divide d_model "
                             "2048; allowed: a divisor of 2048")


def test_cli_fit_fewer_runs_than_parameters(runner, write, tmp_path):
    r = runner.invoke(cli, ["fit", str(write(cases_text([1.0, 2.0], SHAPES[:2]), "runs.yaml")), "-o",
                            str(tmp_path / "f.yaml"), "--params", "gemm,attention,memory"])
    assert error_line(r) == ("error: 2 runs cannot fit 3 parameters (gemm, attention, memory): give at least 3 runs "
                             "or name at most 2 with --params")


def test_cli_fit_unknown_parameter(runner, write, tmp_path):
    r = runner.invoke(cli, ["fit", str(write(cases_text([1.0], SHAPES[:1]), "runs.yaml")), "-o",
                            str(tmp_path / "f.yaml"), "--params", "gem"])
    assert error_line(r) == "error: --params: unknown parameter 'gem'; did you mean 'gemm' or 'memory'?"
