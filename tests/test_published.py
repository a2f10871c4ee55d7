"""Accuracy against published training throughput (tests/data/published-dev.yaml).

Sources: mosaicml/llm-foundry scripts/train/benchmarking/README.md and NVIDIA DeepLearningExamples
PyTorch/LanguageModeling/BERT/README.md. Only the shipped catalogue is used, no per-case constants.
Bounds from the issue: mean absolute percentage error of step time <= 15 %, no case above 40 %.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from simkit.plan import load_plan
from simkit.model.step import predict

DATA = Path(__file__).parent / "data" / "published-dev.yaml"


def errors():
    out = []
    for case in yaml.safe_load(DATA.read_text()):
        plan = {k: v for k, v in case.items() if k not in ("id", "source", "measured")}
        measured = case["measured"]["step_time_s"]
        out.append((case["id"], (predict(load_plan(plan)).step_time_s - measured) / measured))
    return out


def test_published_step_time_error_within_bounds():
    errs = errors()
    assert len(errs) == 173
    mape = sum(abs(e) for _, e in errs) / len(errs)
    worst_id, worst = max(errs, key=lambda x: abs(x[1]))
    assert mape <= 0.15, f"MAPE {mape:.1%}"
    assert abs(worst) <= 0.40, f"{worst_id}: {worst:+.1%}"
