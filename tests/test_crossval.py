"""Runs from every kind of file, the source grouping, leave-one-source-out and few-shot machinery on small
synthetic sets, and the interval: weighted quantiles, coverage by source, the model_error file and predict."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import yaml

from simkit.cli import cli
from simkit.core.errors import SimkitError
from simkit.model import uncertainty
from simkit.model.step import predict
from simkit.plan import load_plan
from simkit.search.fit import Evaluator
from simkit.validate import crossval as cv
from simkit.validate.runs import load_run_plans, load_runs, source_group

from test_fit import SHAPES, plan_dict, synthetic


# ----------------------------------------------------------------------------- sources
@pytest.mark.parametrize("source, group", [
    ("mosaicml/llm-foundry scripts/train/benchmarking/README.md (A100 40GB, 1600 Gbps RoCE)", "mosaicml/llm-foundry"),
    ("'NVIDIA-NeMo/Megatron-Bridge:docs/performance-summary-archive.md, ''25.09 NeMo Container'' (x)'",
     "NVIDIA-NeMo/Megatron-Bridge"),
    ("NVIDIA/DeepLearningExamples PyTorch/LanguageModeling/BERT/README.md at commit 499fb1c (2021) (DGX-1 V100 16GB)",
     "NVIDIA/DeepLearningExamples"),
    ("Narayanan et al. 2021 (Megatron-LM) Table 2, image cli99/llm-analysis:figures/x.png", "Narayanan et al. 2021"),
    ("runs.jsonl (validate --record on host)", "runs.jsonl"),
    ("my cluster", "my cluster"),
])
def test_source_group_is_the_repository_or_the_paper(source, group):
    assert source_group(source) == group


# ----------------------------------------------------------------------------- run files
def test_record_lines_load_as_runs(tmp_path):
    plan = load_plan(plan_dict())
    record = {"plan": dataclasses.asdict(plan.spec), "plan_file": "examples/validation/01-base.yml",
              "measured": {"step_time_s": 0.5}, "environment": {"host": "box"}}
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps(record) + "\n\n" + json.dumps(record) + "\n")
    runs = load_runs([path])
    assert [r.id for r in runs] == ["runs:1:01-base", "runs:3:01-base"]
    assert runs[0].source == "runs.jsonl (validate --record on box)" and runs[0].measured_step_time_s == 0.5
    assert load_run_plans(runs)[0].model == plan.model


def test_record_line_with_a_bad_plan_names_the_line(tmp_path):
    plan = dataclasses.asdict(load_plan(plan_dict()).spec)
    plan["training"]["micro_batch_size"] = 0
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps({"plan": plan, "measured": {"step_time_s": 1.0}}) + "\n")
    with pytest.raises(SimkitError) as err:
        load_run_plans(load_runs([path]))
    assert str(err.value) == (f"{path}:1: training.micro_batch_size: run 'runs:1:line1': 0 must be positive (> 0)")


def test_csv_rows_with_tokens_per_s(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("id,model.n_layers,model.d_model,model.n_heads,model.vocab_size,model.seq_len,"
                    "training.global_batch_size,training.micro_batch_size,training.precision,hardware.device,"
                    "model.causal,tokens_per_s\n"
                    "a,12,768,12,50304,1024,8,8,bf16,a100-80gb,true,16384\n"
                    "b,24,1024,16,50304,2048,4,4,bf16,a100-80gb,False,4096\n")
    runs = load_runs([path])
    assert [r.id for r in runs] == ["a", "b"] and [r.where for r in runs] == [f"{path}:2", f"{path}:3"]
    assert runs[0].measured_step_time_s == pytest.approx(8 * 1024 / 16384)
    plans = load_run_plans(runs)
    assert plans[0].model.causal is True and plans[1].model.causal is False and plans[1].model.n_layers == 24


def test_csv_errors_name_the_row_and_column(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("model.n_layers,modle.d_model,step_time_s\n2,64,1.0\n")
    with pytest.raises(SimkitError, match=r"runs.csv:1: column 'modle.d_model' is not a plan key"):
        load_runs([path])
    path.write_text("model.n_layers,step_time_s\n2,-1\n")
    with pytest.raises(SimkitError, match=r"runs.csv:2: step_time_s: -1 must be a positive number of seconds"):
        load_runs([path])


def test_parquet_rows_load_like_csv(tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"id": ["a", "b"], "model.n_layers": [12, 24], "model.d_model": [768, 1024],
                          "model.n_heads": [12, 15], "model.vocab_size": [50304, 50304], "model.seq_len": [1024, 2048],
                          "training.global_batch_size": [8, 4], "training.micro_batch_size": [8, 4],
                          "hardware.device": ["a100-80gb", "a100-80gb"], "step_time_s": [0.5, 1.2]})
    path = tmp_path / "runs.parquet"
    frame.to_parquet(path)
    runs = load_runs([path])
    assert [(r.id, r.where, r.measured_step_time_s) for r in runs] == [("a", f"{path}: row 1", 0.5),
                                                                        ("b", f"{path}: row 2", 1.2)]
    with pytest.raises(SimkitError) as err:
        load_run_plans(runs)
    assert str(err.value) == (f"{path} (row 2): model.n_heads: run 'b': 15 does not divide d_model 1024; allowed: "
                              "a divisor of 1024")


def test_unknown_run_file_kind(tmp_path):
    with pytest.raises(SimkitError, match=r"unknown kind of runs file '.txt'"):
        load_runs([tmp_path / "runs.txt"])


# ----------------------------------------------------------------------------- leave one source out
def _cases(tmp_path, sources: dict[str, dict], name="cases.yaml"):
    """A published-cases file: per source, the SHAPES measured as the model predicts with `values`."""
    text = []
    for source, values in sources.items():
        plans, measured = synthetic(values, shapes=[s for s in SHAPES if "ckpt" not in s])
        for i, (plan, step) in enumerate(zip(plans, measured)):
            m = plan.model
            text.append({"id": f"{source}-{i}", "source": f"{source}/repo README (run {i})",
                         "model": {"n_layers": m.n_layers, "d_model": m.d_model, "n_heads": m.n_heads,
                                   "vocab_size": m.vocab_size, "seq_len": m.seq_len},
                         "training": {"global_batch_size": plan.training.global_batch_size,
                                      "micro_batch_size": plan.training.micro_batch_size, "precision": "bf16"},
                         "hardware": {"device": "a100-80gb"}, "measured": {"step_time_s": float(step)}})
    path = tmp_path / name
    path.write_text(yaml.safe_dump(text, sort_keys=False))
    return path


def test_leave_source_out_predicts_each_source_from_the_others(tmp_path):
    # three sources agree (gemm 0.85), one runs its GEMMs faster: held out, it is predicted 15 % slow
    path = _cases(tmp_path, {"a": {"gemm": 0.85}, "b": {"gemm": 0.85}, "c": {"gemm": 0.85}, "odd": {"gemm": 1.0}})
    runs = load_runs([path])
    result = cv.leave_source_out(runs, load_run_plans(runs))
    by = {s["source"]: s for s in result["sources"]}
    assert set(by) == {"a/repo", "b/repo", "c/repo", "odd/repo", "all"} and by["all"]["count"] == len(runs)
    for name in ("a/repo", "b/repo", "c/repo"):
        assert by[name]["loso_mape"] < 0.03 < by[name]["default_mape"]
        assert by[name]["fitted_on_others"]["gemm"] == pytest.approx(0.85, rel=0.05)
    plans, _ = synthetic({}, shapes=[s for s in SHAPES if "ckpt" not in s])
    ev = Evaluator(plans)
    slower = np.mean(ev.step_times({"gemm": 0.85}) / ev.step_times({}) - 1)   # what the others' GEMMs cost
    assert by["odd/repo"]["loso_mean_error"] == pytest.approx(slower, rel=0.1)
    assert by["odd/repo"]["default_mape"] < 0.01
    assert result["fitted_all"]["catalogue"]["values"]["gemm"] < 0.9


def test_few_shot_fits_three_runs_and_predicts_the_rest(tmp_path):
    path = _cases(tmp_path, {"a": {"gemm": 0.8}})
    runs = load_runs([path])
    result = cv.few_shot(runs, load_run_plans(runs), min_runs=5)
    (unit,) = result["units"]
    assert unit["source"] == "a/repo" and unit["device"] == "a100-80gb" and unit["predicted"] == len(runs) - 3
    assert unit["values"]["gemm"] == pytest.approx(0.8, rel=0.03)
    assert unit["after"]["mape"] < 0.02 < 0.1 < unit["before"]["mape"]
    assert cv.few_shot(runs, load_run_plans(runs))["units"] == []      # fewer than 6 runs: no few-shot


def test_cli_cv_source_text_json_and_interval_file(runner, tmp_path):
    path = _cases(tmp_path, {"a": {"gemm": 0.85}, "b": {"gemm": 0.9}, "c": {"gemm": 0.8}})
    out = tmp_path / "model_error.yaml"
    out.write_text("coverage: 0.8\ncalibrated: {mape: 0.11, source: kept}\n")
    r = runner.invoke(cli, ["validate", "--published", str(path), "--cv", "source", "--write-interval", str(out)])
    assert r.exit_code == 0, r.output
    for text in ("Leave one source out, catalogue profiles", "in-sample: defaults", "in-sample: fit on all",
                 "80 % interval, catalogue profiles", f"wrote {out}"):
        assert text in r.output
    doc = yaml.safe_load(out.read_text())
    assert doc["calibrated"] == {"mape": 0.11, "source": "kept"} and doc["coverage"] == 0.8
    assert doc["catalogue"]["low"] <= doc["catalogue"]["median"] <= doc["catalogue"]["high"]
    assert doc["catalogue"]["runs"] == 15 and doc["catalogue"]["sources"] == 3
    r = runner.invoke(cli, ["validate", "--published", str(path), "--cv", "source", "--json"])
    data = json.loads(r.output)
    assert set(data) == {"leave_source_out", "few_shot", "intervals", "interval_file"}


def test_cli_write_interval_needs_cv(runner, tmp_path):
    r = runner.invoke(cli, ["validate", "--published", "x.yaml", "--write-interval", str(tmp_path / "e.yaml")])
    assert r.exit_code == 2 and r.output.strip() == ("error: --write-interval needs --cv source (the interval comes "
                                                     "from held-out residuals)")


# ----------------------------------------------------------------------------- the interval
def test_weighted_quantile_hand_computed():
    assert cv.weighted_quantile([1, 2, 3, 4], [1, 1, 1, 1], 0.5) == pytest.approx(2.5)
    # midpoints of cumulative weight: 0.125, 0.375, 0.625, 0.875 -> q 0.25 halfway between 1 and 2
    assert cv.weighted_quantile([4, 3, 2, 1], [1, 1, 1, 1], 0.25) == pytest.approx(1.5)
    # a value with three times the weight holds the median
    assert cv.weighted_quantile([0, 10], [1, 3], 0.5) == pytest.approx(10 * (0.5 - 0.125) / (0.625 - 0.125))


def test_interval_coverage_by_source_hand_computed():
    # residual r = log(pred / measured); e = -r. Source A: e = -0.3..0.3 in steps of 0.1 (7 runs); B: e = 0.5 (1 run)
    e_a = [-0.3, -0.2, -0.1, 0.0, 0.1, 0.2, 0.3]
    residuals = [-x for x in e_a] + [-0.5]
    groups = ["A"] * 7 + ["B"]
    result = cv.interval(residuals, groups, coverage=0.5)
    # sources weigh equally: A's 7 runs share 1/2, B's run 1/2 -> the 0.25 and 0.75 quantiles
    w = np.array([1 / 7] * 7 + [1.0])
    assert result["low"] == pytest.approx(cv.weighted_quantile(e_a + [0.5], w, 0.25))
    assert result["high"] == pytest.approx(cv.weighted_quantile(e_a + [0.5], w, 0.75))
    by = {s["source"]: s for s in result["by_source"]}
    inside = [result["low"] <= x <= result["high"] for x in e_a]
    assert by["A"]["coverage"] == pytest.approx(sum(inside) / 7)
    # held out: B's interval comes from A alone (0.25..0.75 quantiles of A: -0.15..0.15), which misses 0.5
    assert by["B"]["coverage_held_out"] == 0.0
    # A's from B alone: a single value, 0.5: none of A's runs is inside
    assert by["A"]["coverage_held_out"] == 0.0
    assert result["overall"]["coverage"] == pytest.approx((sum(inside) + by["B"]["coverage"]) / 8)


def test_covered_counts_runs_inside():
    assert cv.covered([0.0, -0.1, 0.3], -0.2, 0.2) == pytest.approx(2 / 3)


def test_predict_interval_uses_the_stated_quantiles(monkeypatch):
    errors = {"coverage": 0.9, "catalogue": {"low": -0.2, "median": 0.05, "high": 0.3},
              "calibrated": {"mape": 0.1}}
    monkeypatch.setattr(uncertainty, "known_errors", lambda: errors)
    plan = load_plan(plan_dict())
    pred = predict(plan)
    lo, hi = pred.step_time_interval_s
    assert pred.step_time_interval_coverage == 0.9
    assert lo == pytest.approx(pred.step_time_s * math.exp(-0.2)) and hi == pytest.approx(pred.step_time_s * math.exp(0.3))
    # an entry with only a MAPE: normal errors, symmetric, z(0.95) * MAPE / sqrt(2 / pi)
    low, mid, high = uncertainty.log_bounds(errors["calibrated"], 0.9)
    assert high == -low == pytest.approx(1.6449 * 0.1 / math.sqrt(2 / math.pi), rel=1e-4) and mid == 0


def test_fitted_overlay_uses_the_fitted_entry(monkeypatch):
    errors = {"coverage": 0.8, "catalogue": {"low": -0.2, "median": 0.0, "high": 0.2},
              "fitted": {"low": -0.05, "median": 0.0, "high": 0.05}}
    monkeypatch.setattr(uncertainty, "known_errors", lambda: errors)
    plan = load_plan(plan_dict())
    fitted = dataclasses.replace(plan, device=dataclasses.replace(plan.device, fitted={"gemm": 0.9}))
    assert uncertainty.profile_kind(plan.device) == "catalogue" and uncertainty.profile_kind(fitted.device) == "fitted"
    lo, hi = predict(fitted).step_time_interval_s
    assert hi / lo == pytest.approx(math.exp(0.1))


def test_the_shipped_interval_file_states_coverage_and_every_kind():
    errors = yaml.safe_load(uncertainty.PRESET.read_text())
    assert 0 < errors["coverage"] < 1
    for kind in ("catalogue", "calibrated"):
        low, mid, high = uncertainty.log_bounds(errors[kind], errors["coverage"])
        assert low < mid < high and errors[kind]["source"]


def test_cli_predict_prints_the_coverage(runner, write):
    path = write(yaml.safe_dump(plan_dict()), "plan.yml")
    r = runner.invoke(cli, ["predict", str(path)])
    assert r.exit_code == 0, r.output
    cover = yaml.safe_load(uncertainty.PRESET.read_text())["coverage"]
    assert f"({cover * 100:.0f} % interval " in r.output


def test_evaluator_groups_runs_but_keeps_their_order():
    plans, _ = synthetic({})
    mixed = plans + [load_plan(plan_dict(device="h100-sxm"))] + plans[:1]
    ev = Evaluator(mixed)
    assert np.allclose(ev.step_times({}), [predict(p).step_time_s for p in mixed])
