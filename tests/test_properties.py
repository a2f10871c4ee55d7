"""Properties of predictions over random *valid* plans: every key, every parallelism form, catalogue
devices, systems and a calibrated profile (tests/data/calibrated-cpu-2x2.yaml, measured with
collectives within and across two loopback nodes).

- every output is finite; times, rates, MFU and memory are positive;
- `fits_in_memory` says exactly whether memory per device <= capacity;
- iterations x global batch x seq_len <= tokens < (iterations + 1) x global batch x seq_len;
- more data-parallel devices (more nodes) at the same global batch never increase per-device compute
  time (forward + backward + recompute + optimizer);
- a faster device (every rate of the device and its links scaled up) never predicts a slower step.

The default run tries 150 plans per property; `-m slow` 2,000.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from simkit import hardware as hw
from simkit.model.step import predict
from simkit.plan import load_plan

PROFILE = str(Path(__file__).parent / "data" / "calibrated-cpu-2x2.yaml")
GPUS = [name for name in hw.catalogue_names("device") if name != "cpu"]
SYSTEMS = list(hw.catalogue_names("system"))
INTER = ["ib-hdr", "ib-ndr", "roce-200g", "eth-100g"]
LINKS = ["nvlink3", "nvlink4", "pcie4", "pcie5", "xgmi"]
SIZES = [pytest.param(150, id="fast"), pytest.param(2000, id="slow", marks=pytest.mark.slow)]


@st.composite
def valid_plans(draw) -> dict:
    """A plan mapping that loads: sizes chosen so that every divisibility rule holds."""
    where = draw(st.sampled_from(["catalogue", "catalogue", "system", "profile", "cpu"]))
    tp, pp, cp = (draw(st.sampled_from(options)) for options in ([1, 2, 4, 8], [1, 2, 4], [1, 2]))
    vp = draw(st.sampled_from([1, 2, 3])) if pp > 1 else 1
    dp = draw(st.integers(1, 8))
    devices = dp * tp * pp * cp
    hardware: dict = {}
    if where == "system":
        system = hw.load_system(draw(st.sampled_from(SYSTEMS)))
        assume(devices % system.devices_per_node == 0)
        hardware = {"system": system.name, "nodes": devices // system.devices_per_node}
        device = hw.load_device(system.device)
    else:
        name = {"catalogue": draw(st.sampled_from(GPUS)), "profile": PROFILE, "cpu": "cpu"}[where]
        device = hw.load_device(name)
        per_node = draw(st.sampled_from([d for d in range(1, min(devices, 16) + 1) if devices % d == 0]))
        hardware = {"device": name, "devices_per_node": per_node, "nodes": devices // per_node}
        if per_node > 1 and (where == "cpu" or draw(st.booleans())) and where != "profile":
            hardware["intra_node"] = draw(st.sampled_from(LINKS))
    if hardware["nodes"] > 1 and (where != "profile" or draw(st.booleans())):
        hardware["inter_node"] = draw(st.sampled_from(INTER))
        if draw(st.booleans()):
            hardware["inter_node_links"] = draw(st.integers(1, 8))
    kv = tp * draw(st.integers(1, 4))
    heads = kv * draw(st.integers(1, 4))
    head_dim = draw(st.sampled_from([8, 16, 64, 128]))
    model = {"n_layers": pp * vp * draw(st.integers(1, 4)) + draw(st.integers(0, 3)), "d_model": heads * head_dim,
             "n_heads": heads, "n_kv_heads": kv, "vocab_size": draw(st.integers(1, 200_000)),
             "seq_len": cp * draw(st.sampled_from([16, 64, 512, 2048])),
             "mlp": draw(st.sampled_from(["gelu", "swiglu"])), "causal": draw(st.booleans()),
             "tied_embeddings": draw(st.booleans()),
             "attention": "fused" if cp > 1 else draw(st.sampled_from(["fused", "eager"]))}
    if draw(st.booleans()):
        model["d_ff"] = draw(st.integers(1, 8 * model["d_model"]))
    micro, accum = draw(st.integers(1, 8)), draw(st.sampled_from([1, 2, 3, 4, 8, 16]))
    training = {"global_batch_size": micro * accum * dp, "micro_batch_size": micro,
                "precision": draw(st.sampled_from(sorted(device.peak_flop_per_s))),
                "optimizer": draw(st.sampled_from(["adamw", "adam", "lamb", "sgd"])),
                "activation_checkpointing": draw(st.sampled_from(["none", "selective", "full"]))}
    if draw(st.booleans()):
        training["grad_accum_steps"] = accum
    if training["activation_checkpointing"] == "selective":
        training["selective_checkpointing"] = draw(st.sampled_from(["attention", "ops", "layers"]))
        if training["selective_checkpointing"] == "layers":
            training["checkpoint_every_n_layers"] = draw(st.integers(1, 6))
    parallelism = {"tensor_parallel": tp, "pipeline_parallel": pp, "virtual_pipeline_stages": vp,
                   "context_parallel": cp, "sequence_parallel": draw(st.booleans()),
                   "tp_comm_overlap": draw(st.booleans()), "zero_stage": draw(st.integers(0, 3))}
    if draw(st.booleans()):
        parallelism["data_parallel"] = dp
    plan = {"model": model, "training": training, "parallelism": parallelism, "hardware": hardware}
    data = draw(st.sampled_from(["tokens", "samples", None]))
    if data:
        amount = draw(st.one_of(st.integers(1, 10**13), st.floats(1, 1e15)))
        plan["data"] = {data: float(amount), "epochs": draw(st.sampled_from([1, 2, 0.5, 3.7]))}
    return plan


def _settings(examples: int):
    return settings(max_examples=examples, deadline=None, database=None, derandomize=examples <= 150,
                    suppress_health_check=list(HealthCheck))


def _check_outputs(plan, pred) -> None:
    numbers = {"step_time_s": pred.step_time_s, "samples_per_s": pred.samples_per_s,
               "tokens_per_s": pred.tokens_per_s, "mfu": pred.mfu, "memory": pred.memory_per_device_bytes,
               "parameters": pred.parameters, "model_flop_per_step": pred.model_flop_per_step}
    for name, x in numbers.items():
        assert math.isfinite(x) and x > 0, (name, x)
    lo, hi = pred.step_time_interval_s
    assert 0 < lo <= pred.step_time_s <= hi < math.inf
    for name, x in {**pred.breakdown_s, **pred.memory_breakdown_bytes}.items():
        assert math.isfinite(x) and x >= 0, (name, x)
    assert pred.fits_in_memory == (pred.memory_per_device_bytes <= pred.memory_capacity_bytes)
    tokens = plan.tokens_per_epoch
    if tokens is None:
        assert pred.iterations_per_epoch is None
        return
    per_step = plan.training.global_batch_size * plan.model.seq_len
    it = pred.iterations_per_epoch
    assert isinstance(it, int)
    assert it * per_step <= tokens < (it + 1) * per_step, (it, per_step, tokens)
    for x in (pred.epoch_time_s, pred.total_time_s):
        assert math.isfinite(x) and x >= 0


@pytest.mark.parametrize("examples", SIZES)
def test_outputs_are_finite_positive_and_consistent(examples):
    @_settings(examples)
    @given(valid_plans())
    def check(data):
        plan = load_plan(data)
        _check_outputs(plan, predict(plan))

    check()


def _compute_s(pred) -> float:
    b = pred.breakdown_s
    return b["forward"] + b["backward"] + b["recompute"] + b["optimizer"]


@pytest.mark.parametrize("examples", SIZES)
def test_more_data_parallel_devices_never_increase_per_device_compute(examples):
    """Nodes x k at the same global batch: each device gets 1/k of the micro-batches. (Nodes, not
    devices per node: data-parallel workers on one calibrated CPU share its cores.)"""
    @_settings(examples)
    @given(valid_plans(), st.sampled_from([2, 3, 4]))
    def check(data, k):
        base = load_plan(data)
        assume(base.training.grad_accum_steps % k == 0)
        more = copy.deepcopy(data)
        more["hardware"]["nodes"] = base.hw.nodes * k
        more["hardware"].setdefault("inter_node", "ib-ndr")
        more["training"].pop("grad_accum_steps", None)
        more["parallelism"].pop("data_parallel", None)
        bigger = load_plan(more)
        assert bigger.parallelism.data_parallel == base.parallelism.data_parallel * k
        assert _compute_s(predict(bigger)) <= _compute_s(predict(base)) * (1 + 1e-9)

    check()


def _scaled(obj, k: float):
    """A copy of a device or link with every rate x k and every latency / k."""
    if isinstance(obj, hw.Interconnect):
        return dataclasses.replace(obj, bandwidth_bytes_per_s=obj.bandwidth_bytes_per_s * k, latency_s=obj.latency_s / k)
    cal = obj.calibration
    if cal is not None:
        def fits(table):
            return {op: dataclasses.replace(f, latency_s=f.latency_s / k, bus_bandwidth_bytes_per_s=f.bus_bandwidth_bytes_per_s * k,
                                            points=tuple((b, s / k) for b, s in f.points)) for op, f in table.items()}
        cal = dataclasses.replace(
            cal,
            matmul={dt: tuple(dataclasses.replace(p, flop_per_s=p.flop_per_s * k) for p in pts)
                    for dt, pts in cal.matmul.items()},
            memory_bandwidth={pat: tuple((b, r * k, iqr * k) for b, r, iqr in pts)
                              for pat, pts in cal.memory_bandwidth.items()},
            attention=tuple({**row, "forward_flop_per_s_median": row["forward_flop_per_s_median"] * k,
                             "backward_flop_per_s_median": row["backward_flop_per_s_median"] * k} for row in cal.attention),
            collectives=fits(cal.collectives), collectives_inter=fits(cal.collectives_inter),
            concurrent_matmul=None if cal.concurrent_matmul is None else
            {**cal.concurrent_matmul, "flop_per_s": cal.concurrent_matmul["flop_per_s"] * k})
    return dataclasses.replace(obj, memory_bandwidth_bytes_per_s=obj.memory_bandwidth_bytes_per_s * k,
                               peak_flop_per_s={dt: v * k for dt, v in obj.peak_flop_per_s.items()}, calibration=cal)


@pytest.mark.parametrize("examples", SIZES)
def test_a_faster_device_never_predicts_a_slower_step(examples):
    @_settings(examples)
    @given(valid_plans(), st.floats(1.0, 20.0))
    def check(data, k):
        plan = load_plan(data)
        fast = dataclasses.replace(plan, device=_scaled(plan.device, k),
                                   intra_node=plan.intra_node and _scaled(plan.intra_node, k),
                                   inter_node=plan.inter_node and _scaled(plan.inter_node, k))
        assert predict(fast).step_time_s <= predict(plan).step_time_s * (1 + 1e-9)

    check()


def test_numbers_at_their_upper_bounds_still_predict_finite_numbers():
    """Every plan number at the largest value loading accepts: nothing overflows."""
    from simkit import plan as p

    data = {"model": {"n_layers": p.LAYERS, "d_model": p.WIDTH, "n_heads": p.HEADS // 10, "n_kv_heads": p.HEADS // 10,
                      "d_ff": p.FF, "vocab_size": p.VOCAB, "seq_len": p.SEQ},
            "data": {"tokens": p.TOKENS, "epochs": p.EPOCHS},
            "training": {"global_batch_size": p.BATCH, "micro_batch_size": p.BATCH, "precision": "bf16"},
            "hardware": {"device": "b200"}}
    plan = load_plan(data)
    pred = predict(plan)
    _check_outputs(plan, pred)
    assert not pred.fits_in_memory
