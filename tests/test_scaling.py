"""A plan swept over node counts (search/scaling.py) and the sweep rule it relies on: data_parallel is a
whole number of replicas."""
from __future__ import annotations

from pathlib import Path

import pytest

from simkit.model.step import predict
from simkit.plan import load_plan
from simkit.search.sweep import run_sweep

LLAMA = Path(__file__).resolve().parents[1] / "examples" / "llama3-70b-64xh100.yml"   # TP4 x PP4 x CP2, 8 nodes


def test_sweep_refuses_fewer_devices_than_one_model_replica():
    # 1 node = 8 GPUs, but one replica spans TP4 x PP4 x CP2 = 32: data_parallel would be 1/4
    df = run_sweep(LLAMA, ["hardware.nodes=1,2,8"])
    assert list(df["reason"][:2]) == ["tensor_parallel x pipeline_parallel x context_parallel does not divide the "
                                      "devices"] * 2
    assert df["reason"][2] == "" and df["step_time_s"][2] == pytest.approx(predict(load_plan(LLAMA)).step_time_s)
