"""A plan swept over node counts (search/scaling.py) and the sweep rule it relies on: data_parallel is a
whole number of replicas."""
from __future__ import annotations

from pathlib import Path

import pytest

from simkit.core.errors import SimkitError
from simkit.model.step import predict
from simkit.plan import load_plan
from simkit.search.scaling import default_nodes, parse_nodes, scaling_table
from simkit.search.sweep import run_sweep

LLAMA = Path(__file__).resolve().parents[1] / "examples" / "llama3-70b-64xh100.yml"   # TP4 x PP4 x CP2, 8 nodes


def test_sweep_refuses_fewer_devices_than_one_model_replica():
    # 1 node = 8 GPUs, but one replica spans TP4 x PP4 x CP2 = 32: data_parallel would be 1/4
    df = run_sweep(LLAMA, ["hardware.nodes=1,2,8"])
    assert list(df["reason"][:2]) == ["tensor_parallel x pipeline_parallel x context_parallel does not divide the "
                                      "devices"] * 2
    assert df["reason"][2] == "" and df["step_time_s"][2] == pytest.approx(predict(load_plan(LLAMA)).step_time_s)


def test_strong_scaling_keeps_the_batch_and_loses_efficiency_to_the_bubble():
    df = scaling_table(LLAMA, [1, 4, 8, 16, 64]).set_index("nodes")
    assert df.loc[1, "reason"] != "" and df.loc[8, "reason"] == ""
    assert set(df["global_batch_size"]) == {128}
    plan = predict(load_plan(LLAMA))
    assert df.loc[8, "tokens_per_s"] == pytest.approx(plan.tokens_per_s)
    # the baseline (efficiency 1) is the smallest valid node count that fits in memory; smaller ones do not fit
    fitting = [n for n in df.index if df.loc[n, "reason"] == "" and df.loc[n, "fits_in_memory"] is True]
    baseline = fitting[0]
    assert df.loc[baseline, "scaling_efficiency"] == pytest.approx(1.0)
    assert all(not df.loc[n, "fits_in_memory"] for n in df.index if n < baseline and df.loc[n, "reason"] == "")
    assert df.loc[64, "ideal_tokens_per_s"] == pytest.approx(64 / baseline * df.loc[baseline, "tokens_per_s"])
    # 64 micro-batches per pipeline at 8 nodes, 8 at 64 nodes: the bubble (p-1)/(v m) grows 8x
    assert 0.8 < df.loc[64, "scaling_efficiency"] < df.loc[16, "scaling_efficiency"] < 1.0


def test_weak_scaling_grows_the_batch_and_keeps_the_step():
    df = scaling_table(LLAMA, [8, 16, 32], scale_batch=True).set_index("nodes")
    assert list(df["global_batch_size"]) == [128, 256, 512]
    assert df.loc[32, "step_time_s"] == pytest.approx(df.loc[8, "step_time_s"], rel=0.02)
    assert df.loc[32, "scaling_efficiency"] > 0.98


def test_node_lists():
    assert parse_nodes("8, 1,2,2") == [1, 2, 8]
    assert default_nodes(1) == [1, 2, 4, 8] and default_nodes(3) == [1, 2, 3, 4, 8, 16]
    for bad in ("1,x", "0,2", ""):
        with pytest.raises(SimkitError, match="--nodes"):
            parse_nodes(bad)
