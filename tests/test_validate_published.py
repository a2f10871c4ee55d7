"""`simkit validate --published`: loading a published-cases file and the structure of its scoring.
(The accuracy bound itself lives in tests/test_published.py.)"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from simkit.cli import cli
from simkit.core.errors import SimkitError
from simkit.validate.published import load_published, score_published

DATA = Path(__file__).parent / "data" / "published-dev.yaml"
SUMMARY_KEYS = {"source", "count", "mape", "median_ape", "max_ape", "mean_error", "worst"}

CASE = """\
- id: tiny-{n}
  source: {source}
  model: {{n_layers: 2, d_model: 64, n_heads: 4, vocab_size: 256, seq_len: 32}}
  training: {{global_batch_size: 2, micro_batch_size: 2, precision: fp32}}
  hardware: {{device: cpu}}
  measured: {{step_time_s: {step}}}
"""


class Fixed:
    def __init__(self, step_time_s):
        self.step_time_s = step_time_s


def test_score_published_dev_structure():
    cases = load_published(DATA)
    assert len(cases) == 173
    score = score_published(cases)
    assert len(score["cases"]) + len(score["skipped"]) == 173
    sources = {s["source"]: s for s in score["sources"]}
    assert "all" in sources and sources["all"]["count"] == len(score["cases"])
    assert sum(s["count"] for name, s in sources.items() if name != "all") == len(score["cases"])
    for s in score["sources"]:
        assert set(s) == SUMMARY_KEYS
        assert 0 <= s["median_ape"] <= s["max_ape"] and 0 <= s["mape"] <= s["max_ape"]
        apes = [abs(w["error"]) for w in s["worst"]]
        assert len(s["worst"]) == min(5, s["count"]) and apes == sorted(apes, reverse=True)
        assert apes[0] == pytest.approx(s["max_ape"])
    for c in score["cases"]:
        assert c["error"] == pytest.approx((c["predicted_step_time_s"] - c["measured_step_time_s"]) / c["measured_step_time_s"])


def test_score_hand_computed(write):
    text = "".join(CASE.format(n=n, source=src, step=step)
                   for n, (src, step) in enumerate([("A", 1.0), ("A", 2.0), ("A", 4.0), ("B", 0.5)]))
    score = score_published(load_published(write(text, "cases.yaml")), predict_fn=lambda plan: Fixed(2.0))
    by = {s["source"]: s for s in score["sources"]}
    # A: errors +100%, 0%, -50%  -> MAPE 50%, median 50%, max 100%;  B: +300%
    assert by["A"]["count"] == 3 and by["A"]["mape"] == pytest.approx(0.5)
    assert by["A"]["median_ape"] == pytest.approx(0.5) and by["A"]["max_ape"] == pytest.approx(1.0)
    assert [w["id"] for w in by["A"]["worst"]] == ["tiny-0", "tiny-2", "tiny-1"]
    assert by["B"]["mape"] == pytest.approx(3.0) and by["all"]["count"] == 4
    assert by["all"]["mape"] == pytest.approx((1.0 + 0.0 + 0.5 + 3.0) / 4)


def test_a_case_that_does_not_load_is_skipped_with_its_line(write):
    text = CASE.format(n=0, source="A", step=1.0) + CASE.format(n=1, source="A", step=1.0).replace(
        "device: cpu", "device: no-such-gpu")
    path = write(text, "cases.yaml")
    score = score_published(load_published(path), predict_fn=lambda plan: Fixed(1.0))
    assert [c["id"] for c in score["cases"]] == ["tiny-0"]
    (skipped,) = score["skipped"]
    assert skipped["id"] == "tiny-1"
    assert skipped["reason"].startswith(f"{path}:11: hardware.device: unknown device 'no-such-gpu'")


def test_missing_measurement_names_file_line_and_key(write):
    path = write(CASE.format(n=0, source="A", step=1.0).replace("measured: {step_time_s: 1.0}", "measured: {}"),
                 "cases.yaml")
    with pytest.raises(SimkitError) as err:
        load_published(path)
    assert str(err.value) == f"{path}:6: 0.measured.step_time_s: None must be a positive number of seconds"


def test_not_a_list(write):
    with pytest.raises(SimkitError, match="expected a list of cases"):
        load_published(write("id: x\n", "cases.yaml"))


def test_cli_published_text_json_and_plot(runner, tmp_path):
    plot = tmp_path / "scatter.png"
    result = runner.invoke(cli, ["validate", "--published", str(DATA), "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert "MAPE" in result.stdout and "median APE" in result.stdout and "worst cases" in result.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = runner.invoke(cli, ["validate", "--published", str(DATA), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert set(doc) == {"cases", "sources", "precisions", "skipped"}


def test_cli_published_takes_several_files(runner):
    dev2 = DATA.parent / "published-dev-2.yaml"
    result = runner.invoke(cli, ["validate", "--published", str(DATA), str(dev2), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert len(doc["cases"]) == 173 + 54 and not doc["skipped"]
    groups = {g["source"]: g["count"] for g in doc["precisions"]}
    precisions = [c["training"]["precision"] for path in (DATA, dev2) for c in yaml.safe_load(path.read_text())]
    assert groups == {"bf16/fp16": sum(p in ("bf16", "fp16") for p in precisions),
                      "fp32/tf32": sum(p in ("fp32", "tf32") for p in precisions),
                      "fp8": sum(p == "fp8" for p in precisions)}
    assert groups["fp8"] == 25 and groups["bf16/fp16"] + groups["fp32/tf32"] == 173 + 29


def test_cli_published_refuses_duplicate_case_ids(runner):
    result = runner.invoke(cli, ["validate", "--published", str(DATA), str(DATA)])
    assert result.exit_code == 2
    assert "case id 'foundry-" in result.output and "ids must be unique" in result.output


def test_cli_published_rejects_live_options(runner):
    result = runner.invoke(cli, ["validate", "--published", str(DATA), "--set", "training.precision=fp32"])
    assert result.exit_code == 2
    assert "--profile, --record and --set apply to live runs" in result.output
