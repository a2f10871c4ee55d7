"""`simkit optimize`: known answers on a space small enough to enumerate, the memory filter at its boundary,
a layout that crosses nodes, properties of the search, and its errors."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simkit.cli import cli
from simkit.core.errors import SimkitError
from simkit.model.step import predict
from simkit.plan import load_plan
from simkit.search.engine import Batch, evaluate
from simkit.search.optimize import _variant_loader, optimize
from simkit.search.space import build_space, layouts

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# A 4-layer model on one node of 8 A100s: small enough to enumerate every layout by hand.
TINY = {"model": {"n_layers": 4, "d_model": 256, "n_heads": 4, "vocab_size": 1024, "seq_len": 512},
        "training": {"global_batch_size": 8, "micro_batch_size": 1, "precision": "bf16"},
        "hardware": {"system": "dgx-a100-80gb", "nodes": 1}}


def _layout_set(plan_dict) -> set[tuple]:
    plan = load_plan(plan_dict)
    space = build_space(plan, {})
    rows = set()
    for chunk in layouts(plan, space):
        result = evaluate(_variant_loader(plan_dict, None), Batch(len(chunk["training.micro_batch_size"]), numeric=chunk))
        assert (result["reason"] == "").all()
        keys = ("parallelism.tensor_parallel", "parallelism.pipeline_parallel", "parallelism.context_parallel",
                "parallelism.virtual_pipeline_stages", "training.micro_batch_size")
        rows |= set(zip(*(chunk[k].astype(int).tolist() for k in keys)))
    return rows


def test_every_layout_of_a_4_layer_model_on_8_devices():
    """TP divides the 4 heads and PP the 4 layers; TP x PP x CP divides 8 (18 triples); DP = 8 / (TP PP CP)
    takes 8 / DP = TP PP CP sequences a step, so the micro-batch is a divisor of TP PP CP; with PP 2 the
    interleaved schedule may run 2 chunks (4 layers = 2 x 2). Summed over the triples: 77 layouts."""
    by_hand = set()
    for tp, pp, cp in itertools.product((1, 2, 4), (1, 2, 4), (1, 2, 4, 8)):
        if 8 % (tp * pp * cp):
            continue
        for vp in ((1, 2) if pp == 2 else (1,)):
            for mb in (d for d in (1, 2, 4, 8) if (tp * pp * cp) % d == 0):
                by_hand.add((tp, pp, cp, vp, mb))
    assert len(by_hand) == 77
    assert _layout_set(TINY) == by_hand


def test_the_layouts_are_exactly_those_the_plan_loader_accepts():
    """Every power-of-two layout the plan loader accepts is searched, and nothing else (vp up to 4)."""
    accepted = set()
    for tp, pp, cp, vp, mb in itertools.product((1, 2, 4, 8), (1, 2, 4, 8), (1, 2, 4, 8), (1, 2, 3, 4), (1, 2, 4, 8)):
        sets = [f"parallelism.tensor_parallel={tp}", f"parallelism.pipeline_parallel={pp}",
                f"parallelism.context_parallel={cp}", f"parallelism.virtual_pipeline_stages={vp}",
                f"training.micro_batch_size={mb}"]
        try:
            load_plan(TINY, sets)
        except SimkitError:
            continue
        accepted.add((tp, pp, cp, vp, mb))
    assert accepted == _layout_set(TINY)


def test_every_configuration_shown_is_valid_fits_and_equals_predict():
    result = optimize(TINY, top=20, headroom=0.5)
    assert result.searched == 77 * 12 + sum(1 for r in _layout_set(TINY) if r[0] > 1) * 12
    for c in result.top:
        assert c.prediction.memory_per_device_bytes <= result.usable_bytes
        again = predict(load_plan(c.plan.raw))
        assert again.step_time_s == pytest.approx(c.prediction.step_time_s, rel=1e-12)
    assert [c.objective for c in result.top] == sorted(c.objective for c in result.top)


def test_the_memory_filter_at_its_boundary():
    free = optimize(TINY, top=1, headroom=0.0)
    best = free.top[0]
    need, capacity = best.prediction.memory_per_device_bytes, best.prediction.memory_capacity_bytes
    exactly = 1 - need / capacity
    kept = optimize(TINY, top=1, headroom=exactly * (1 - 1e-12))
    assert kept.top[0].prediction.memory_per_device_bytes <= kept.usable_bytes
    assert kept.top[0].settings == best.settings           # it still fits: memory <= usable
    over = optimize(TINY, top=200, headroom=exactly + 1e-9)  # a hair less memory allowed: it is out
    assert all(c.prediction.memory_per_device_bytes < need for c in over.top)


def test_a_tensor_parallel_group_across_nodes_is_penalized_as_the_model_says():
    plan = EXAMPLES / "llama3-70b-64xh100.yml"
    fixed = ("parallelism.pipeline_parallel=4", "parallelism.context_parallel=1", "parallelism.zero_stage=1",
             "training.activation_checkpointing=none", "parallelism.sequence_parallel=true",
             "parallelism.virtual_pipeline_stages=5", "training.micro_batch_size=1")
    result = optimize(plan, fix=fixed, allow=("parallelism.tensor_parallel=8,16",),
                      overrides=("model.n_kv_heads=16",), top=2)
    inside, across = result.top
    assert inside.settings["parallelism.tensor_parallel"] == 8 and across.settings["parallelism.tensor_parallel"] == 16
    exposed = [c.prediction.communication_s["tensor"]["exposed"] for c in (inside, across)]
    assert exposed[1] > 2 * exposed[0]
    assert any("tensor-parallel group of 16 spans 2 nodes" in n for n in across.prediction.placement)
    assert "exposed tensor-parallel communication (its tensor-parallel group of 16 spans 2 nodes" in result.explanation
    alone = predict(load_plan(plan, ["model.n_kv_heads=16", "parallelism.tensor_parallel=16", "parallelism.context_parallel=1",
                                     "parallelism.data_parallel=null", "training.grad_accum_steps=null"]))
    assert across.prediction.step_time_s == pytest.approx(alone.step_time_s, rel=1e-12)


def test_ties_within_the_model_uncertainty_share_a_rank():
    result = optimize(TINY, top=10)
    ranks = [c.rank for c in result.top]
    leader = result.top[0].objective
    for c in result.top:
        assert (c.rank == 1) == (c.objective <= leader * (1 + result.tie_tolerance))
    assert ranks == sorted(ranks)


SUBSETS = {"parallelism.tensor_parallel": [1, 2, 4], "parallelism.pipeline_parallel": [1, 2, 4],
           "training.micro_batch_size": [1, 2, 4, 8], "parallelism.zero_stage": [0, 1, 2, 3]}


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(sorted(SUBSETS)), st.just(None), min_size=1, max_size=2), st.data())
def test_allowing_more_layouts_never_makes_the_best_slower(keys, data):
    narrow = []
    for key in keys:
        values = data.draw(st.lists(st.sampled_from(SUBSETS[key]), min_size=1, max_size=2, unique=True))
        narrow.append(f"{key}={','.join(map(str, values))}")
    try:
        small = optimize(TINY, top=1, allow=narrow).top[0].objective
    except SimkitError:
        return              # nothing fits or is valid among the narrow choices
    assert optimize(TINY, top=1).top[0].objective <= small * (1 + 1e-12)


# ----------------------------------------------------------------------------- errors
def test_nothing_fits_says_the_least_memory_needed(runner):
    r = runner.invoke(cli, ["optimize", str(EXAMPLES / "llama3-70b-64xh100.yml"), "--devices", "8"])
    assert r.exit_code == 2
    assert r.output.count("\n") == 1
    assert "no layout fits on 8 x h100-sxm: the smallest needs" in r.output and "GiB per device" in r.output


def test_devices_not_a_multiple_of_the_node(runner):
    r = runner.invoke(cli, ["optimize", str(EXAMPLES / "llama3-70b-64xh100.yml"), "--devices", "12"])
    assert r.exit_code == 2
    assert "--devices 12 is not a multiple of the 8 devices per node" in r.output


def test_unknown_allow_key(runner):
    r = runner.invoke(cli, ["optimize", str(EXAMPLES / "llama3-70b-64xh100.yml"), "--allow", "parallelism.tensor_paralel=2,4"])
    assert r.exit_code == 2
    assert "unknown key 'parallelism.tensor_paralel'; did you mean 'parallelism.tensor_parallel'" in r.output


def test_cli_table_json_and_parquet(runner, tmp_path):
    import json

    import pyarrow.parquet as pq

    out = tmp_path / "top.parquet"
    r = runner.invoke(cli, ["optimize", str(EXAMPLES / "llama3-70b-64xh100.yml"), "--top", "3", "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert "rank" in r.output and "main loss" in r.output and "The best layout is" in r.output
    assert pq.read_table(out).num_rows == 3
    r = runner.invoke(cli, ["optimize", str(EXAMPLES / "llama3-70b-64xh100.yml"), "--top", "2", "--json"])
    data = json.loads(r.output)
    assert len(data["top"]) == 2 and data["top"][0]["rank"] == 1 and data["explanation"]
