"""Pipeline, tensor/sequence and context parallelism: known answers from the papers that define them,
hand-computable cases, and the sweep engine agreeing with predict over the new keys."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from simkit import hardware as hw
from simkit.model.comm.collectives import Fabric
from simkit.model.comm.topology import group
from simkit.model.memory import activation_bytes_per_layer
from simkit.model.parallel import pipeline, tensor
from simkit.model.step import predict
from simkit.plan import load_plan
from simkit.search.sweep import run_sweep

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
GIB = 2**30


# ----------------------------------------------------------------------------- pipeline
def test_bubble_fractions_of_1f1b_and_interleaved():
    # Narayanan et al. 2021, Sec. 2.2.1: bubble (p-1)/m; Sec. 2.2.2: (p-1)/(v m) with v model chunks
    assert pipeline.bubble_fraction(8, 32) == pytest.approx(7 / 32)
    assert pipeline.bubble_fraction(8, 32, 4) == pytest.approx(7 / 128)


def test_schedule_time_is_m_plus_p_minus_1_stage_times():
    # equal stages of t: (m + p - 1) t for 1F1B, (m + (p - 1)/v) t interleaved
    t, p, m = 2.0, 4, 16
    assert pipeline.schedule_time(stage_times=t, stage_sum=p * t, microbatches=m, virtual_stages=1) == (m + p - 1) * t
    assert pipeline.schedule_time(stage_times=t, stage_sum=p * t, microbatches=m, virtual_stages=5) == \
        pytest.approx((m + (p - 1) / 5) * t)


def test_uneven_layers_go_to_the_middle_stages_first():
    # Llama 3.1 405B on 8 stages: 126 layers = 15 on the first and last stage (embedding, LM head) and
    # 16 on the six middle ones, as Megatron-Bridge places them (126 + embedding + loss = 128)
    s = pipeline.stage_layers(126, 8)
    assert (s.first, s.middle, s.last) == (15, 16, 15)
    assert pipeline.stage_layers(80, 4).first == 20
    s1 = pipeline.stage_layers(7, 1)
    assert (s1.first, s1.last) == (7, 7)


def test_in_flight_microbatches_1f1b_and_interleaved():
    # 1F1B: stage s holds min(p - s, m); interleaved: p (1 + (p-1)/(p v)) on the first stage
    # (Megatron-LM theoretical_memory_usage.py)
    assert pipeline.in_flight_microbatches(8, 64, 1, stage=0) == 8
    assert pipeline.in_flight_microbatches(8, 4, 1, stage=0) == 4
    assert pipeline.in_flight_microbatches(8, 64, 1, stage=7) == 1
    assert pipeline.in_flight_microbatches(4, 64, 5, stage=0) == pytest.approx(4 * (1 + 3 / 20))


def test_p2p_bytes_per_microbatch():
    # one micro-batch's activations b x s x h at 2 bytes, each TP rank sending its 1/t share;
    # GPT-3 175B, b=1, s=2048, h=12288, t=8: 6.29 MB per rank per boundary per direction
    assert pipeline.p2p_bytes(batch=1, local_seq_len=2048, d_model=12288, act_bytes=2, tensor_parallel=8) == \
        1 * 2048 * 12288 * 2 / 8


def test_predicted_bubble_matches_the_formula_for_equal_stages():
    # 4 equal stages (a vocabulary of 8 makes the embedding and LM head negligible), 8 micro-batches:
    # the bubble is (p - 1) stage times, (p-1)/m = 3/8 of the busy time; interleaving divides it by v
    from simkit.model.step import categorical, numeric, simulate

    for v in (1, 2):
        plan = load_plan(_tiny(pipeline_parallel=4, grad_accum_steps=8, vocab=8, virtual_stages=v))
        r = simulate(categorical(plan), numeric(plan))
        assert float(r["pipeline_bubble"]) == pytest.approx(3 / v * float(r["stage_time_s"]), rel=0.01)
        assert float(r["pipeline_bubble"]) / (8 * float(r["stage_time_s"])) == pytest.approx(3 / (8 * v), rel=0.01)


# ----------------------------------------------------------------------------- tensor parallel
def _fabric(link="nvlink3"):
    """One 8-GPU node; NVLink 3 has no SHARP, so an all-reduce is a ring like its RS + AG halves."""
    return Fabric(hw.load_device("a100-80gb"), hw.load_interconnect(link), None, 8, 8)


def test_tp_communication_volume_with_and_without_sequence_parallel():
    # Korthikanti et al. 2022, Sec. 4.2.2: SP replaces each all-reduce by a reduce-scatter + all-gather of the
    # same bytes; backward re-gathers the column-parallel inputs: forward 4 units of (t-1)/t S each way,
    # backward 4 (no SP: 2 all-reduces) or 6 (SP: 4 all-gathers + 2 reduce-scatters)
    gemms = tensor.LayerGemmTimes(0.0, 0.0, 0.0, 0.0, 0.0)
    f, g = _fabric(), group(8, 1, 8)
    size = 256 * 2**20
    plain = tensor.layer_comm(activation_bytes=size, group=g, fabric=f, sequence_parallel=False, overlap=False, gemms=gemms)
    sp = tensor.layer_comm(activation_bytes=size, group=g, fabric=f, sequence_parallel=True, overlap=False, gemms=gemms)
    assert float(sp.fwd_total) == pytest.approx(float(plain.fwd_total), rel=0.05)
    assert float(sp.bwd_total) / float(plain.bwd_total) == pytest.approx(6 / 4, rel=0.05)
    # on NVLink 4 the switch reduces (NVLS): the all-reduce beats its ring halves
    h100 = tensor.layer_comm(activation_bytes=size, group=g, fabric=_fabric("nvlink4"), sequence_parallel=False,
                             overlap=False, gemms=gemms)
    h100_sp = tensor.layer_comm(activation_bytes=size, group=g, fabric=_fabric("nvlink4"), sequence_parallel=True,
                                overlap=False, gemms=gemms)
    assert float(h100.fwd_total) < 0.8 * float(h100_sp.fwd_total)


def test_tp_backward_collectives_hide_behind_weight_gradients():
    # Megatron runs the column-parallel input-gradient all-reduce during the weight-gradient GEMM
    f, g = _fabric(), group(8, 1, 8)
    long = tensor.LayerGemmTimes(1.0, 1.0, 1.0, 1.0, 1.0)
    c = tensor.layer_comm(activation_bytes=2**26, group=g, fabric=f, sequence_parallel=False, overlap=False, gemms=long)
    assert float(c.bwd_exposed) == 0.0 and float(c.fwd_exposed) == pytest.approx(float(c.fwd_total))
    o = tensor.layer_comm(activation_bytes=2**26, group=g, fabric=f, sequence_parallel=True, overlap=True, gemms=long)
    assert float(o.fwd_exposed) == pytest.approx(float(o.fwd_total) / 8)   # one chunk of 8 stays exposed


def test_activation_memory_matches_korthikanti_table_2():
    # Korthikanti et al. 2022, Table 2, bytes per layer at 16-bit with dropout and materialized attention,
    # GPT-3 175B shape, t = 8. simkit also counts the fp32 mean and 1/std each LayerNorm keeps per token
    # (8 bytes x 2 norms, which the paper leaves out) and, with fused attention, the fp32 log-sum-exp per
    # head and token.
    s, b, h, a, t = 2048, 1, 12288, 96, 8
    tokens = s * b
    norms = 2 * 8 * tokens
    kept = activation_bytes_per_layer
    assert kept(tokens, h, a / t, s, b, 2, "eager", "none", t, False) == pytest.approx(
        s * b * h * (10 + 24 / t + 5 * a * s / (h * t)) + norms)                    # tensor parallel
    assert kept(tokens, h, a / t, s, b, 2, "eager", "none", t, True) == pytest.approx(
        s * b * h / t * (34 + 5 * a * s / h) + norms / t)                           # + sequence parallel
    assert kept(tokens, h, a / t, s, b, 2, "eager", "selective", t, False) == pytest.approx(
        s * b * h * (10 + 24 / t) + norms)                                          # + selective recompute
    assert kept(tokens, h, a / t, s, b, 2, "eager", "selective", t, True) == pytest.approx(
        s * b * h * 34 / t + norms / t)                                             # SP + selective
    lse = 4 * tokens * a / t
    assert kept(tokens, h, a / t, s, b, 2, "fused", "none", t, True) == pytest.approx(s * b * h * 34 / t + norms / t + lse)
    # without dropout the two 1-byte masks after attention and MLP go: 32 instead of 34
    assert kept(tokens, h, a / t, s, b, 2, "fused", "none", t, True, dropout=False) == pytest.approx(
        s * b * h * 32 / t + norms / t + lse)
    assert kept(tokens, h, a / t, s, b, 2, "fused", "full", t, True) == pytest.approx(2 * s * b * h / t)


# ----------------------------------------------------------------------------- context parallel
def test_context_parallel_splits_tokens_and_attention():
    base = predict(load_plan(_tiny(tensor_parallel=1, seq_len=4096)))
    cp = predict(load_plan(_tiny(tensor_parallel=1, seq_len=4096, context_parallel=2)))
    # same model FLOPs per step (the sequence is split, not dropped), half the activations per device
    assert cp.model_flop_per_step == pytest.approx(base.model_flop_per_step)
    assert cp.memory_breakdown_bytes["activations"] < 0.6 * base.memory_breakdown_bytes["activations"]
    assert cp.communication_s["context"]["total"] > 0


# ----------------------------------------------------------------------------- memory at scale
def test_megatron_1t_layout_fits_and_its_memory_breakdown():
    # Narayanan et al. 2021, Table 1: 1T parameters (128 layers, h 25600, 160 heads), TP 8 x PP 64 on 3072
    # A100 80GB, micro-batch 1, full recomputation: it ran, so it must fit
    pred = simkit_predict("megatron-1t-3072xa100.yml")
    assert pred.parameters == pytest.approx(1.008e12, rel=0.01)
    assert pred.fits_in_memory
    assert pred.pipeline["layers_first_stage"] == 2


def test_llama3_70b_example_fits_only_with_its_parallelism():
    pred = simkit_predict("llama3-70b-64xh100.yml")
    assert pred.fits_in_memory and pred.memory_per_device_bytes <= 80 * GIB
    flat = predict(load_plan(EXAMPLES / "llama3-70b-64xh100.yml", [
        "parallelism.tensor_parallel=1", "parallelism.pipeline_parallel=1", "parallelism.virtual_pipeline_stages=1",
        "parallelism.context_parallel=1", "parallelism.data_parallel=64", "training.grad_accum_steps=2"]))
    assert not flat.fits_in_memory
    assert flat.memory_per_device_bytes > 80 * GIB


def test_examples_explain_their_parallel_costs():
    for name in ("llama3-70b-64xh100.yml", "gpt-neox-20b-epochs.yml"):
        pred = simkit_predict(name)
        assert pred.breakdown_s["pipeline_bubble"] > 0
        assert pred.communication_s["tensor"]["total"] > 0 and pred.communication_s["pipeline"]["total"] > 0
        assert pred.pipeline["in_flight_microbatches_first_stage"] > 1
        assert any("pipeline group" in note for note in pred.placement)
        assert not any("not modelled" in w for w in pred.warnings)


# ----------------------------------------------------------------------------- sweep
def test_sweep_over_parallel_keys_matches_predict():
    sweep = run_sweep(EXAMPLES / "llama3-70b-64xh100.yml", [
        "parallelism.tensor_parallel=2,4,8", "parallelism.pipeline_parallel=2,4",
        "parallelism.context_parallel=1,2", "parallelism.virtual_pipeline_stages=1,5"])
    assert len(sweep) == 24
    valid = sweep[sweep["reason"] == ""]
    assert len(valid) == 24
    for row in valid.head(6).itertuples():
        sets = [f"parallelism.tensor_parallel={row[1]}", f"parallelism.pipeline_parallel={row[2]}",
                f"parallelism.context_parallel={row[3]}", f"parallelism.virtual_pipeline_stages={row[4]}",
                "parallelism.data_parallel=null", "training.grad_accum_steps=null"]
        one = predict(load_plan(EXAMPLES / "llama3-70b-64xh100.yml", sets))
        assert row.step_time_s == pytest.approx(one.step_time_s, rel=1e-9)
        assert row.memory_per_device_bytes == pytest.approx(one.memory_per_device_bytes, rel=1e-9)


def test_sweep_flags_invalid_parallel_layouts():
    sweep = run_sweep(EXAMPLES / "llama3-70b-64xh100.yml", ["parallelism.context_parallel=3",
                                                           "parallelism.virtual_pipeline_stages=50"])
    assert list(sweep["reason"]) == ["pipeline_parallel x virtual_pipeline_stages is more than n_layers"]


# ----------------------------------------------------------------------------- helpers
def simkit_predict(name: str):
    return predict(load_plan(EXAMPLES / name))


def _tiny(*, tensor_parallel=1, pipeline_parallel=1, context_parallel=1, grad_accum_steps=4, seq_len=1024,
          vocab=1024, virtual_stages=1) -> dict:
    devices = tensor_parallel * pipeline_parallel * context_parallel
    return copy.deepcopy({
        "model": {"n_layers": 16, "d_model": 2048, "n_heads": 16, "vocab_size": vocab, "seq_len": seq_len},
        "training": {"global_batch_size": grad_accum_steps, "micro_batch_size": 1, "precision": "bf16",
                     "grad_accum_steps": grad_accum_steps},
        "parallelism": {"tensor_parallel": tensor_parallel, "pipeline_parallel": pipeline_parallel,
                        "context_parallel": context_parallel, "data_parallel": 1,
                        "virtual_pipeline_stages": virtual_stages},
        "hardware": {"system": "dgx-h100", "devices_per_node": devices}})
