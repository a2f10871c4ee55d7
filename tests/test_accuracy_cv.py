"""Honest accuracy on the two published dev files (issue 12): leave-one-source-out with catalogue profiles,
few-shot fits, and the coverage of the interval `simkit predict` states. Each test fails past the bounds the
issue sets; where today's model does not meet them the test is marked xfail (not strict) with the numbers,
so that it starts passing, and shows so, when the model gets there."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from simkit.model import uncertainty
from simkit.validate import crossval as cv
from simkit.validate.runs import load_run_plans, load_runs

DEV = [Path(__file__).parent / "data" / name for name in ("published-dev.yaml", "published-dev-2.yaml")]
SOURCE_MAX, ALL_MAX, CASE_MAX = 0.15, 0.10, 0.35      # issue 12, "Must show"
FEW_SHOT_MAX = 0.05
COVERAGE_SLACK = 0.10


@pytest.fixture(scope="module")
def dev():
    runs = load_runs(DEV)
    plans = load_run_plans(runs)
    return cv.leave_source_out(runs, plans), cv.few_shot(runs, plans)


def test_every_dev_source_is_held_out_once(dev):
    loso, _ = dev
    sources = [s for s in loso["sources"] if s["source"] != "all"]
    assert {s["kind"] for s in sources} == {"catalogue"}
    assert sum(s["count"] for s in sources) == len(loso["rows"]) == 227
    assert len(sources) == 7 and all(set(s["fitted_on_others"]) for s in sources)


@pytest.mark.xfail(strict=False, reason="2026-12-03: held out, Narayanan et al. 2021 32.4 %, Megatron-LM README 18.9 %, "
                   "llm-foundry 14.3 %; all 13.7 %; worst case 76 % (a Narayanan ZeRO-3 run; 78 % with the defaults)")
def test_leave_one_source_out_within_the_issue_bounds(dev):
    loso, _ = dev
    rows = {s["source"]: s for s in loso["sources"] if s["kind"] == "catalogue"}
    over = {k: round(s["loso_mape"], 3) for k, s in rows.items() if k != "all" and s["loso_mape"] > SOURCE_MAX}
    worst = max(loso["rows"], key=lambda r: abs(r["loso_error"]))
    assert not over, f"sources above {SOURCE_MAX:.0%} MAPE held out: {over}"
    assert rows["all"]["loso_mape"] <= ALL_MAX, f"all cases: {rows['all']['loso_mape']:.1%}"
    assert abs(worst["loso_error"]) <= CASE_MAX, f"{worst['id']}: {worst['loso_error']:+.1%}"


@pytest.mark.xfail(strict=False, reason="2026-12-03: few-shot MAPE above 5 % for Narayanan et al. 2021 (32.9 %), "
                   "NeMo (10.0 %), Megatron-LM (9.4 %), llm-foundry A100-40GB (9.2 %) and 80GB (8.8 %), "
                   "Megatron-Bridge H100 (6.6 %); DeepLearningExamples (4.2-4.9 %) and torchtitan (4.0 %) meet it")
def test_few_shot_within_five_percent(dev):
    _, shots = dev
    assert len(shots["units"]) >= 7
    over = {f"{u['source']} on {u['device']}": round(u["after"]["mape"], 3) for u in shots["units"]
            if u["after"]["mape"] > FEW_SHOT_MAX}
    assert not over, f"few-shot MAPE above {FEW_SHOT_MAX:.0%}: {over}"


def test_the_shipped_interval_covers_what_it_states_on_held_out_residuals(dev):
    loso, _ = dev
    errors = yaml.safe_load(uncertainty.PRESET.read_text())
    low, _, high = uncertainty.log_bounds(errors["catalogue"], errors["coverage"])
    residuals = [r["loso_residual"] for r in loso["rows"]]
    got = cv.covered(residuals, low, high)
    assert abs(got - errors["coverage"]) <= COVERAGE_SLACK, (
        f"the {errors['coverage']:.0%} interval covers {got:.1%} of the held-out runs; regenerate it: simkit validate "
        "--published tests/data/published-dev.yaml tests/data/published-dev-2.yaml --cv source --write-interval "
        "simkit/presets/model_error.yaml")
    # and with each source's quantiles computed from the other sources only
    held = cv.interval(residuals, [r["source"] for r in loso["rows"]], errors["coverage"])["overall"]
    assert abs(held["coverage_held_out"] - errors["coverage"]) <= COVERAGE_SLACK
