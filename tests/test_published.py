"""Accuracy against published training throughput, with the shipped catalogue only (no per-case or
per-source constants).

tests/data/published-dev.yaml (mosaicml/llm-foundry scripts/train/benchmarking/README.md, NVIDIA
DeepLearningExamples PyTorch/LanguageModeling/BERT/README.md): mean absolute percentage error of step
time <= 10 %, no case above 40 % (issue 10: "published-dev stays at or under 10 %").
tests/data/published-dev-2.yaml (Narayanan et al. 2021, Megatron-Core, NeMo, Megatron-Bridge, torchtitan):
the bf16/fp16 runs at most 15 % with no case above 40 % (issue 10) -- not met yet, an expected failure
(README, "Where the model misses"); the FP8 runs are held to the same bounds and meet them.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from simkit.core.yamlio import Located
from simkit.model.step import predict
from simkit.plan import load_plan, load_plan_located
from simkit.validate.published import load_published

DATA = Path(__file__).parent / "data" / "published-dev.yaml"
DEV2 = Path(__file__).parent / "data" / "published-dev-2.yaml"


def errors():
    out = []
    for case in yaml.safe_load(DATA.read_text()):
        plan = {k: v for k, v in case.items() if k not in ("id", "source", "measured")}
        measured = case["measured"]["step_time_s"]
        out.append((case["id"], (predict(load_plan(plan)).step_time_s - measured) / measured))
    return out


def dev2_errors(precisions: tuple[str, ...]) -> list[tuple[str, float]]:
    out = []
    for case in load_published(DEV2):
        data = {k: v for k, v in case.plan.data.items() if k not in ("assumed", "notes")}
        plan = load_plan_located(Located(copy.deepcopy(data), case.plan.file, case.plan.lines))
        if plan.training.precision in precisions:
            out.append((case.id, predict(plan).step_time_s / case.measured_step_time_s - 1))
    return out


def _check(errs: list[tuple[str, float]], mape_bound: float, worst_bound: float) -> None:
    mape = sum(abs(e) for _, e in errs) / len(errs)
    worst_id, worst = max(errs, key=lambda x: abs(x[1]))
    assert mape <= mape_bound, f"MAPE {mape:.1%}"
    assert abs(worst) <= worst_bound, f"{worst_id}: {worst:+.1%}"


def test_published_step_time_error_within_bounds():
    errs = errors()
    assert len(errs) == 173
    _check(errs, 0.10, 0.40)


def test_published_dev2_fp8_runs_within_bounds():
    errs = dev2_errors(("fp8",))
    assert len(errs) == 25
    _check(errs, 0.15, 0.40)


@pytest.mark.xfail(strict=False, reason="DeepSpeed ZeRO-3 runs of Narayanan et al. 2021 (up to -78 %) and the "
                   "Megatron-Core TP 8 runs are missed; README 'Where the model misses'")
def test_published_dev2_bf16_runs_within_bounds():
    errs = dev2_errors(("bf16", "fp16"))
    assert len(errs) == 29
    _check(errs, 0.15, 0.40)
