"""Known answers, hand-computed cases and invariants of the step simulator."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

import simkit
from simkit.model.memory import activation_bytes_per_layer
from simkit.plan import load_plan
from simkit.model.precision import policy
from simkit.model.step import predict
from simkit.model.workload import Shape, parameter_count, transformer_ops

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

BASE = {
    "model": {"n_layers": 4, "d_model": 512, "n_heads": 8, "vocab_size": 32000, "seq_len": 1024},
    "data": {"tokens": 1.0e9},
    "training": {"global_batch_size": 64, "micro_batch_size": 4, "precision": "bf16"},
    "parallelism": {"zero_stage": 0},
    "hardware": {"system": "dgx-a100-80gb", "nodes": 2},
}


def plan_with(**changes):
    raw = copy.deepcopy(BASE)
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        raw[section][key] = value
    return raw


def test_gpt_neox_iterations_per_epoch():
    # GPT-NeoX-20B: 31,267,487 samples x 2,048 tokens at global batch 1,024 -> 30,534 iterations
    # (Black et al. 2022; EleutherAI/gpt-neox configs).
    pred = simkit.predict(EXAMPLES / "gpt-neox-20b-epochs.yml")
    assert pred.iterations_per_epoch == 30534


def test_six_n_d_for_gpt3_175b():
    # Kaplan et al. 2020: training compute ~= 6 N D; for GPT-3 175B at 2048 tokens the attention
    # scores add 6 * n_layers * seq * d (about 1%), so the model FLOPs per token are 6N within 3%.
    plan = load_plan({"model": {"preset": "gpt3-175b"}, "training": {"global_batch_size": 1024, "micro_batch_size": 1},
                      "parallelism": {"zero_stage": 3}, "hardware": {"system": "dgx-a100-80gb", "nodes": 128}})
    pred = predict(plan)
    tokens = 1024 * 2048
    six_nd = 6 * pred.parameters * tokens
    assert pred.parameters == pytest.approx(175e9, rel=0.01)
    assert pred.model_flop_per_step == pytest.approx(six_nd, rel=0.03)
    assert pred.model_flop_per_step > six_nd          # attention FLOPs come on top


def test_activation_memory_matches_korthikanti():
    # Korthikanti et al. 2022, Table 2 ("no parallelism"): s*b*h*(34 + 5*a*s/h) bytes per layer, 16-bit.
    s, b, h, a = 2048, 4, 4096, 32
    expected = s * b * h * (34 + 5 * a * s / h)
    got = activation_bytes_per_layer(s * b, h, a, s, b, 2, "eager", "none")
    assert got == pytest.approx(expected + 2 * 8 * s * b)   # + each LayerNorm's fp32 mean and 1/std per token
    # full recomputation keeps only the layer input, 2*s*b*h bytes (same paper, Sec. 4.3)
    assert activation_bytes_per_layer(s * b, h, a, s, b, 2, "eager", "full") == 2 * s * b * h


def test_zero3_shards_model_states_over_data_parallel():
    # ZeRO (Rajbhandari et al. 2020, Fig. 1): stage 3 divides weights, grads and optimizer states by Nd.
    raw = plan_with(parallelism__zero_stage=0)
    full = predict(load_plan(raw)).memory_breakdown_bytes
    raw["parallelism"]["zero_stage"] = 3
    sharded = predict(load_plan(raw)).memory_breakdown_bytes
    assert sharded["optimizer_states"] == pytest.approx(full["optimizer_states"] / 16)
    assert sharded["gradients"] == pytest.approx(full["gradients"] / 16)


def test_hand_computed_tiny_model_flops():
    # 1 layer, d=64, 4 heads, d_ff=256, vocab 100, seq 16, batch 2 -> t = 32 tokens.
    # Forward GEMM FLOPs = 2*t*(3*d*d + d*d + 2*d*dff) + 2*t*d*V ; fused causal attention 4*b*s*s*d/2.
    t, d, f, V, s, b = 32, 64, 256, 100, 16, 2
    gemm = 2 * t * (3 * d * d + d * d + 2 * d * f) + 2 * t * d * V
    attn = 4 * b * s * s * d / 2
    w = transformer_ops(Shape(b, s, d, 4, 4, f, V, 1), mlp="gelu", causal=True, attention="fused",
                        prec=policy("bf16"))
    assert sum(g.flops for g in w.gemms) == gemm
    assert w.attention.flops_fwd == attn
    assert parameter_count(1, d, 4, 4, f, V, "gelu", True) == 4 * d * d + 2 * d * f + 4 * d + V * d + 2 * d


def test_grad_accumulation_adds_micro_steps_and_syncs_once():
    one = predict(load_plan(plan_with(training__micro_batch_size=4)))
    four = predict(load_plan(plan_with(training__micro_batch_size=1)))   # accum 4x larger, same global batch
    assert four.breakdown_s["communication_total"] == pytest.approx(one.breakdown_s["communication_total"])
    assert four.breakdown_s["forward"] > one.breakdown_s["forward"] * 0.9


def test_does_not_fit_warning_says_by_how_much():
    pred = simkit.predict(EXAMPLES / "llama2-7b-fsdp-8xa100.yml", ["parallelism.zero_stage=0",
                                                                 "training.activation_checkpointing=none"])
    assert not pred.fits_in_memory
    assert any("does not fit" in w and "GiB over" in w for w in pred.warnings)


def test_json_keys_present():
    d = simkit.predict(EXAMPLES / "tiny-cpu.yml").to_dict()
    for key in ("step_time_s", "step_time_interval_s", "samples_per_s", "tokens_per_s", "iterations_per_epoch",
                "epoch_time_s", "total_time_s", "mfu", "memory_per_device_bytes", "fits_in_memory", "breakdown_s"):
        assert key in d
    lo, hi = d["step_time_interval_s"]
    assert lo < d["step_time_s"] < hi
    assert 0 < d["mfu"] < 1


# ----------------------------------------------------------------------------- properties
sizes = st.sampled_from([1, 2, 4, 8])


@settings(max_examples=40, deadline=None)
@given(nodes=st.sampled_from([1, 2, 4]), more=st.sampled_from([2, 4]), micro=sizes,
       precision=st.sampled_from(["bf16", "fp32", "fp16"]), zero=st.integers(0, 3),
       ckpt=st.sampled_from(["none", "selective", "full"]))
def test_more_devices_never_increase_compute_time(nodes, more, micro, precision, zero, ckpt):
    gbs = 8 * nodes * more * micro
    def compute(n):
        raw = plan_with(hardware__nodes=n, training__global_batch_size=gbs, training__micro_batch_size=micro,
                        training__precision=precision, parallelism__zero_stage=zero,
                        training__activation_checkpointing=ckpt)
        b = predict(load_plan(raw)).breakdown_s
        return b["forward"] + b["backward"] + b["recompute"]
    assert compute(nodes * more) <= compute(nodes) * (1 + 1e-9)


@settings(max_examples=30, deadline=None)
@given(mult=st.sampled_from([1, 2, 4, 8]), tokens=st.floats(1e9, 1e13))
def test_doubling_global_batch_halves_iterations(mult, tokens):
    def iters(g):
        raw = plan_with(training__global_batch_size=g, data__tokens=tokens)
        return predict(load_plan(raw)).iterations_per_epoch
    g = 64 * mult
    exact = tokens / (g * 1024)
    assert iters(g) == math.floor(exact)
    assert iters(2 * g) == math.floor(exact / 2)


@settings(max_examples=40, deadline=None)
@given(layers=st.integers(1, 48), heads=st.sampled_from([4, 8, 16]), width=st.sampled_from([64, 128]),
       seq=st.sampled_from([128, 512, 2048]), micro=sizes, precision=st.sampled_from(["bf16", "fp32", "tf32", "fp16"]),
       attention=st.sampled_from(["fused", "eager"]), mlp=st.sampled_from(["gelu", "swiglu"]), zero=st.integers(0, 3))
def test_outputs_positive_and_finite(layers, heads, width, seq, micro, precision, attention, mlp, zero):
    raw = plan_with(model__n_layers=layers, model__n_heads=heads, model__d_model=heads * width, model__seq_len=seq,
                    model__attention=attention, model__mlp=mlp, training__micro_batch_size=micro,
                    training__global_batch_size=16 * micro, training__precision=precision,
                    parallelism__zero_stage=zero)
    d = predict(load_plan(raw)).to_dict()
    for key in ("step_time_s", "samples_per_s", "tokens_per_s", "epoch_time_s", "memory_per_device_bytes", "mfu"):
        assert math.isfinite(d[key]) and d[key] > 0, key
    assert all(math.isfinite(v) and v >= 0 for v in d["breakdown_s"].values())


def _one_gpu(accum: int, **extra):
    raw = {"model": {"n_layers": 4, "d_model": 1024, "n_heads": 16, "vocab_size": 32000, "seq_len": 1024},
           "data": {"tokens": 1.0e9},
           "training": {"global_batch_size": 2 * accum, "micro_batch_size": 2, "precision": "bf16", **extra},
           "hardware": {"device": "h100-sxm"}}
    return predict(load_plan(raw))


@pytest.mark.parametrize("stack, bytes_per_micro_step, bytes_per_step", [
    # Megatron's gradient-accumulation fusion: the weight-gradient GEMMs add into the fp32 main_grad buffer
    # in their epilogue; the buffer is zeroed once per step (4 B per parameter written)
    ({"master_weights": "optimizer"}, 0, 4),
    # PyTorch autograd: each micro-step after the first adds its fp32 gradients into .grad:
    # read 4 B, read 4 B, write 4 B per parameter at the achieved HBM bandwidth
    ({"master_weights": "model"}, 3 * 4, 0),
])
def test_gradient_accumulation_pass_per_micro_step(stack, bytes_per_micro_step, bytes_per_step):
    """On one device (no communication) eight micro-steps cost eight times the forward and backward of one,
    plus, without accumulation fusion, one pass over the gradients for each micro-step after the first;
    with it, the once-per-step zeroing is counted once instead of eight times."""
    from simkit import hardware as hw
    from simkit.model.cost import memory_time

    one, eight = _one_gpu(1, **stack), _one_gpu(8, **stack)
    device, params = hw.load_device("h100-sxm"), one.parameters
    delta = {k: eight.breakdown_s[k] - 8 * one.breakdown_s[k] for k in ("forward", "backward")}
    expected = 0.0
    if bytes_per_micro_step:
        expected += 7 * memory_time(device, bytes_per_micro_step * params)
    if bytes_per_step:
        expected -= 7 * memory_time(device, bytes_per_step * params)
    assert delta["forward"] == pytest.approx(0.0, abs=1e-9)
    assert delta["backward"] == pytest.approx(expected, rel=1e-6)
