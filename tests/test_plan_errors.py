"""Exact error text for bad plans, profiles and --set overrides.

Every error is one line, `FILE:LINE: KEY: message`, naming the bad value and what is allowed
(STYLE.md principle 4). Each case writes a file so that the message carries the file and line.
"""
from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from simkit.core.errors import SimkitError
from simkit.plan import load_plan

from samples import CALIBRATED_PROFILE_HEAD

# A valid single-device plan. Line numbers matter to the error-text tests:
#  1 model:  2 n_layers  3 d_model  4 n_heads  5 vocab_size  6 seq_len  7 data:  8 tokens
#  9 training:  10 global_batch_size  11 micro_batch_size  12 precision  13 hardware:  14 device
PLAN = """\
model:
  n_layers: 12
  d_model: 768
  n_heads: 12
  vocab_size: 50257
  seq_len: 1024
data:
  tokens: 1.0e+9
training:
  global_batch_size: 32
  micro_batch_size: 8
  precision: bf16
hardware:
  device: a100-80gb
"""

APPEND = None  # an edit with old=APPEND adds its text at the end of the plan

# 200 bytes that expand to 9^7 = 4.8 million values (the 7 levels of 9 aliases), lines 15-22
BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n" for p, n in zip("abcdef", "bcdefg")) + "bomb: *g\n"

MULTI = "  device: a100-80gb\n  devices_per_node: 4\n  intra_node: nvlink3\n"  # lines 14-16
PARALLEL = "parallelism:\n"                                                    # line 17, then 18

# (id, edits applied to PLAN as (old, new), expected line with {path} for the plan file)
PLAN_CASES = [
    ("unknown key", [("  seq_len:", "  seq_lenn:")],
     "{path}:6: model.seq_lenn: unknown key; did you mean 'seq_len'?"),
    ("unknown section", [("training:", "trainig:")],
     "{path}:9: trainig: unknown key; did you mean 'training'?"),
    ("duplicate key", [("  seq_len: 1024\n", "  seq_len: 1024\n  seq_len: 2048\n")],
     "{path}:7: model.seq_len: duplicate key (first written on line 6)"),
    ("string for int", [("n_layers: 12", "n_layers: twelve")],
     "{path}:2: model.n_layers: 'twelve' is not an integer"),
    ("bool for int", [("n_layers: 12", "n_layers: true")],
     "{path}:2: model.n_layers: true is not an integer"),
    ("fraction for int", [("n_layers: 12", "n_layers: 12.5")],
     "{path}:2: model.n_layers: 12.5 is not an integer"),
    ("zero", [("n_layers: 12", "n_layers: 0")],
     "{path}:2: model.n_layers: 0 must be positive (> 0)"),
    ("negative", [("micro_batch_size: 8", "micro_batch_size: -8")],
     "{path}:11: training.micro_batch_size: -8 must be positive (> 0)"),
    ("infinite", [("tokens: 1.0e+9", "tokens: .inf")],
     "{path}:8: data.tokens: inf is not a finite number"),
    ("not a number", [("tokens: 1.0e+9", "tokens: .nan")],
     "{path}:8: data.tokens: nan is not a finite number"),
    ("overflowing exponent", [("tokens: 1.0e+9", "tokens: 1e400")],
     "{path}:8: data.tokens: inf is not a finite number"),
    ("string for number", [("tokens: 1.0e+9", "tokens: lots")],
     "{path}:8: data.tokens: 'lots' is not a number"),
    ("null value", [("n_layers: 12", "n_layers:")],
     "{path}:2: model.n_layers: a value is required here, expected an integer"),
    ("string for bool", [("  seq_len: 1024\n", "  seq_len: 1024\n  causal: 'yes'\n")],
     "{path}:7: model.causal: 'yes' is not true or false"),
    ("number for name", [("device: a100-80gb", "device: 100")],
     "{path}:14: hardware.device: 100 is not a non-empty string"),
    ("unknown device", [("device: a100-80gb", "device: a100")],
     "{path}:14: hardware.device: unknown device 'a100'; did you mean 'a10' or 'a100-80gb' or 'a100-40gb'?"),
    ("unknown system", [("device: a100-80gb", "system: dgx-h1000")],
     "{path}:14: hardware.system: unknown system 'dgx-h1000'; did you mean 'dgx-h100' or 'dgx-h200' or "
     "'dgx-a100-80gb'?"),
    ("unknown interconnect", [("  device: a100-80gb\n", "  device: a100-80gb\n  intra_node: nvlink9\n")],
     "{path}:15: hardware.intra_node: unknown interconnect 'nvlink9'; did you mean 'nvlink5' or 'nvlink4' or "
     "'nvlink3'?"),
    ("unknown preset", [("model:\n", "model:\n  preset: gpt2-smal\n")],
     "{path}:2: model.preset: unknown preset 'gpt2-smal'; did you mean 'gpt2-774m' or 'gpt2-355m' or "
     "'gpt2-124m'?"),
    ("bad literal", [("precision: bf16", "precision: fp64")],
     "{path}:12: training.precision: 'fp64' is not allowed; allowed: fp32 | tf32 | fp16 | bf16 | fp8"),
    ("bad literal mlp", [("  seq_len: 1024\n", "  seq_len: 1024\n  mlp: relu\n")],
     "{path}:7: model.mlp: 'relu' is not allowed; allowed: gelu | swiglu"),
    ("global not a multiple", [("global_batch_size: 32", "global_batch_size: 30")],
     "{path}:10: training.global_batch_size: 30 is not a multiple of micro_batch_size 8 x data_parallel 1 = 8"),
    ("global != micro x accum x dp", [("micro_batch_size: 8\n", "micro_batch_size: 8\n  grad_accum_steps: 3\n")],
     "{path}:12: training.grad_accum_steps: global_batch_size 32 != micro_batch_size 8 x grad_accum_steps 3 x "
     "data_parallel 1 = 24"),
    ("devices don't multiply out", [("  device: a100-80gb\n", MULTI), (APPEND, PARALLEL + "  data_parallel: 3\n")],
     "{path}:18: parallelism.data_parallel: data_parallel 3 x tensor_parallel 1 x pipeline_parallel 1 x "
     "context_parallel 1 = 3 != 4 devices (devices_per_node 4 x nodes 1)"),
    ("model parallel doesn't divide devices",
     [("n_heads: 12", "n_heads: 6"), ("  device: a100-80gb\n", MULTI), (APPEND, PARALLEL + "  tensor_parallel: 3\n")],
     "{path}:18: parallelism.tensor_parallel: tensor_parallel 3 x pipeline_parallel 1 x context_parallel 1 = 3 "
     "does not divide the 4 devices (devices_per_node 4 x nodes 1)"),
    ("heads don't divide d_model", [("n_heads: 12", "n_heads: 11")],
     "{path}:4: model.n_heads: 11 does not divide d_model 768; allowed: a divisor of 768"),
    ("tensor_parallel doesn't divide heads",
     [("  device: a100-80gb\n", MULTI), (APPEND, PARALLEL + "  tensor_parallel: 8\n")],
     "{path}:18: parallelism.tensor_parallel: 8 does not divide n_heads 12; allowed: a divisor of n_heads"),
    ("n_kv_heads doesn't divide n_heads", [("n_heads: 12\n", "n_heads: 12\n  n_kv_heads: 5\n")],
     "{path}:5: model.n_kv_heads: 5 does not divide n_heads 12; allowed: a divisor of n_heads"),
    ("more pipeline stages than layers", [("n_layers: 12", "n_layers: 2"), ("  device: a100-80gb\n", MULTI),
                                          (APPEND, PARALLEL + "  pipeline_parallel: 4\n")],
     "{path}:18: parallelism.pipeline_parallel: 4 is more than n_layers 2; allowed: 1..2"),
    ("more model chunks than layers", [("  device: a100-80gb\n", MULTI),
                                       (APPEND, PARALLEL + "  pipeline_parallel: 4\n  virtual_pipeline_stages: 4\n")],
     "{path}:19: parallelism.virtual_pipeline_stages: pipeline_parallel 4 x virtual_pipeline_stages 4 = 16 model "
     "chunks for 12 layers; each chunk needs a layer (allowed: at most 3)"),
    ("virtual stages without a pipeline", [(APPEND, PARALLEL + "  virtual_pipeline_stages: 2\n")],
     "{path}:16: parallelism.virtual_pipeline_stages: 2 needs pipeline_parallel > 1 (model chunks per pipeline rank)"),
    ("context parallel doesn't divide seq_len", [("  device: a100-80gb\n", MULTI),
                                                 (APPEND, PARALLEL + "  context_parallel: 3\n")],
     "{path}:18: parallelism.context_parallel: 3 does not divide seq_len 1024; allowed: a divisor of seq_len"),
    ("tensor parallel doesn't divide kv heads", [("n_heads: 12", "n_heads: 12\n  n_kv_heads: 2"),
                                                 ("  device: a100-80gb\n", MULTI),
                                                 (APPEND, PARALLEL + "  tensor_parallel: 4\n")],
     "{path}:19: parallelism.tensor_parallel: 4 does not divide n_kv_heads 2; allowed: a divisor of n_kv_heads "
     "(Megatron splits the key/value heads over the TP group)"),
    ("sequence_parallel not a bool", [(APPEND, PARALLEL + "  sequence_parallel: maybe\n")],
     "{path}:16: parallelism.sequence_parallel: 'maybe' is not true or false"),
    ("zero_stage above range", [(APPEND, PARALLEL + "  zero_stage: 4\n")],
     "{path}:16: parallelism.zero_stage: 4 is above the maximum 3 (allowed 0..3)"),
    ("zero_stage below range", [(APPEND, PARALLEL + "  zero_stage: -1\n")],
     "{path}:16: parallelism.zero_stage: -1 is below the minimum 0 (allowed 0..3)"),
    ("tokens and samples", [("tokens: 1.0e+9\n", "tokens: 1.0e+9\n  samples: 1000\n")],
     "{path}:9: data.samples: give either 'tokens' or 'samples', not both"),
    ("neither tokens nor samples", [("tokens: 1.0e+9", "epochs: 2")],
     "{path}:7: data: missing required key 'tokens' or 'samples'"),
    ("missing required key", [("  vocab_size: 50257\n", "")],
     "{path}:1: model: missing required key 'vocab_size' (an integer: vocabulary size)"),
    ("missing section", [("hardware:\n  device: a100-80gb\n", "")],
     "{path}:1: missing required key 'hardware' at the top level (a mapping)"),
    ("section not a mapping", [("data:\n  tokens: 1.0e+9\n", "data: 5\n")],
     "{path}:7: data: expected a mapping of keys, got int 5"),
    ("no device", [("device: a100-80gb", "nodes: 1")],
     "{path}:13: hardware: missing required key 'device' (or give a 'system')"),
    ("several devices, no intra_node", [("  device: a100-80gb\n", "  device: cpu\n  devices_per_node: 4\n")],
     "{path}:13: hardware.intra_node: required when devices_per_node > 1 (an interconnect name, e.g. nvlink3 or "
     "pcie4), or use a profile calibrated with --comm"),
    ("several nodes, no inter_node", [("  device: a100-80gb\n", "  device: a100-80gb\n  nodes: 4\n")],
     "{path}:13: hardware.inter_node: required when nodes > 1 (e.g. ib-hdr, roce-200g, eth-100g), or use a "
     "profile calibrated across nodes (calibrate --comm --nnodes N)"),
    ("precision unsupported by device", [("precision: bf16", "precision: fp8")],
     "{path}:12: training.precision: 'fp8' is not supported by device 'a100-80gb'; allowed: fp32, tf32, fp16, bf16"),
    ("missing profile path", [("device: a100-80gb", "device: ./no-such-profile.yaml")],
     "{path}:14: hardware.device: profile file './no-such-profile.yaml' not found"),
    # what a careless or hostile hand writes: bombs, tags, non-finite and huge numbers, bools, odd keys
    ("YAML alias bomb", [(APPEND, BOMB)],
     "{path}:16: b.0: YAML aliases are not allowed (*a); write the value out"),
    ("YAML alias", [("  n_layers: 12\n", "  n_layers: &layers 12\n"), ("  n_heads: 12", "  n_heads: *layers")],
     "{path}:4: model.n_heads: YAML aliases are not allowed (*layers); write the value out"),
    ("YAML merge key", [("model:\n", "model:\n  <<: {causal: true}\n")],
     "{path}:2: model: merge keys ('<<') are not allowed; write the keys out"),
    ("python tag", [("n_layers: 12", "n_layers: !!python/object/apply:os.system ['echo hi']")],
     "{path}:2: model.n_layers: the YAML tag '!!python/object/apply:os.system' is not allowed; write a plain value"),
    ("python name tag", [("device: a100-80gb", "device: !!python/name:os.system")],
     "{path}:14: hardware.device: the YAML tag '!!python/name:os.system' is not allowed; write a plain value"),
    ("local tag", [("precision: bf16", "precision: !fast bf16")],
     "{path}:12: training.precision: the YAML tag '!fast' is not allowed; write a plain value"),
    ("set tag", [("precision: bf16", "precision: !!set {bf16}")],
     "{path}:12: training.precision: the YAML tag '!!set' is not allowed; write a plain value"),
    ("NaN in an integer", [("n_layers: 12", "n_layers: .nan")],
     "{path}:2: model.n_layers: nan is not a finite number"),
    ("negative infinity", [("tokens: 1.0e+9", "tokens: -.inf")],
     "{path}:8: data.tokens: -inf is not a finite number"),
    ("huge width", [("  seq_len: 1024\n", "  seq_len: 1024\n  d_ff: 1.0e+308\n")],
     "{path}:7: model.d_ff: 1e+308 is above the maximum 10000000 (the most simkit computes with)"),
    ("huge integer", [("vocab_size: 50257", "vocab_size: 1000000000000000000000000000000")],
     "{path}:5: model.vocab_size: 1000000000000000000000000000000 is above the maximum 100000000 (the most "
     "simkit computes with)"),
    ("integer beyond float", [("n_layers: 12", "n_layers: 1" + "0" * 400)],
     "{path}:2: model.n_layers: 100000000000... is not a number simkit can use (over 100 digits)"),
    ("huge token count", [("tokens: 1.0e+9", "tokens: 1.0e+30")],
     "{path}:8: data.tokens: 1e+30 is above the maximum 1e+18 (the most simkit computes with)"),
    ("bool for a parallel size", [(APPEND, PARALLEL + "  tensor_parallel: true\n")],
     "{path}:16: parallelism.tensor_parallel: true is not an integer"),
    ("bool for a number", [("tokens: 1.0e+9", "tokens: yes")],
     "{path}:8: data.tokens: true is not a number"),
    ("date for an integer", [("n_layers: 12", "n_layers: 2026-01-01")],
     "{path}:2: model.n_layers: 2026-01-01 is not an integer"),
    ("impossible date", [("n_layers: 12", "n_layers: 2026-13-45")],
     "{path}:2: model.n_layers: '2026-13-45' is not a valid date (month must be in 1..12)"),
    ("list for an integer", [("n_layers: 12", "n_layers: [1, 2]")],
     "{path}:2: model.n_layers: [1, 2] is not an integer"),
    ("mapping for a name", [("device: a100-80gb", "device: {name: a100-80gb}")],
     "{path}:14: hardware.device: {{'name': 'a100-80gb'}} is not a non-empty string"),
    ("empty name", [("device: a100-80gb", "device: ''")],
     "{path}:14: hardware.device: '' is not a non-empty string"),
    ("duplicate section", [(APPEND, "model:\n  n_layers: 2\n")],
     "{path}:15: model: duplicate key (first written on line 1)"),
    ("list as a key", [("  seq_len: 1024\n", "  seq_len: 1024\n  ? [a, b]\n  : 1\n")],
     "{path}:7: model: a key must be a plain name, not a list or mapping"),
    ("number as a key", [("  seq_len: 1024\n", "  seq_len: 1024\n  1024: seq_len\n")],
     "{path}:7: model.1024: unknown key; allowed: attention, attention_kernel, causal, d_ff, d_model, dropout, "
     "kernels, mlp, n_heads, n_kv_heads, n_layers, norm, ..."),
    ("control character", [("n_layers: 12", "n_layers: 1\x072")],
     "{path}:2: not valid YAML: control characters are not allowed, character '\\x07'"),
    ("nested too deep", [("tokens: 1.0e+9", "tokens: " + "[" * 40 + "]" * 40)],
     "{path}:8: data.tokens.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0: nested more than 32 levels deep"),
    ("unknown preset, keys left to it", [("model:\n  n_layers: 12\n  d_model: 768\n  n_heads: 12\n  vocab_size: "
                                          "50257\n  seq_len: 1024\n", "model:\n  preset: llama-9000\n")],
     "{path}:2: model.preset: unknown preset 'llama-9000'; did you mean 'llama3-70b' or 'llama2-70b' or 'llama3-8b'?"),
    # the parallelism keys
    ("data_parallel zero", [(APPEND, PARALLEL + "  data_parallel: 0\n")],
     "{path}:16: parallelism.data_parallel: 0 must be positive (> 0)"),
    ("virtual stages zero", [(APPEND, PARALLEL + "  virtual_pipeline_stages: 0\n")],
     "{path}:16: parallelism.virtual_pipeline_stages: 0 must be positive (> 0)"),
    ("pipeline above the maximum", [(APPEND, PARALLEL + "  pipeline_parallel: 1.0e+9\n")],
     "{path}:16: parallelism.pipeline_parallel: 1000000000.0 is above the maximum 1000000 (the most simkit "
     "computes with)"),
    ("context parallel with eager attention", [("  seq_len: 1024\n", "  seq_len: 1024\n  attention: eager\n"),
                                               ("  device: a100-80gb\n", MULTI),
                                               (APPEND, PARALLEL + "  context_parallel: 4\n")],
     "{path}:19: parallelism.context_parallel: 4 needs model.attention: fused (ring attention runs fused kernels)"),
    ("tp_comm_overlap not a bool", [(APPEND, PARALLEL + "  tp_comm_overlap: 'yes'\n")],
     "{path}:16: parallelism.tp_comm_overlap: 'yes' is not true or false"),
    ("zero_stage a fraction", [(APPEND, PARALLEL + "  zero_stage: 1.5\n")],
     "{path}:16: parallelism.zero_stage: 1.5 is not an integer"),
    ("selective keys without selective", [("precision: bf16\n", "precision: bf16\n  selective_checkpointing: ops\n")],
     "{path}:13: training.selective_checkpointing: only applies with activation_checkpointing: selective (it is "
     "'none')"),
    ("every-n-layers without layers", [("precision: bf16\n", "precision: bf16\n  activation_checkpointing: "
                                        "selective\n  checkpoint_every_n_layers: 3\n")],
     "{path}:14: training.checkpoint_every_n_layers: only applies with selective_checkpointing: layers (it is "
     "'attention')"),
    ("checkpoint_every_n_layers zero", [("precision: bf16\n", "precision: bf16\n  activation_checkpointing: "
                                         "selective\n  selective_checkpointing: layers\n  checkpoint_every_n_layers: 0\n")],
     "{path}:15: training.checkpoint_every_n_layers: 0 must be positive (> 0)"),
    ("YAML syntax", [("seq_len: 1024", "seq_len: [1024")],
     "{path}:7: not valid YAML: did not find expected ',' or ']' (while parsing a flow sequence started on line 6)"),
    ("tab indentation", [("  seq_len: 1024", "\tseq_len: 1024")],
     "{path}:6: not valid YAML: found a tab character that violates indentation"),
    ("two documents", [(APPEND, "---\nmodel: {}\n")],
     "{path}:15: not valid YAML: a second document ('---'); expected one mapping"),
]


def _edit(text: str, edits: list) -> str:
    for old, new in edits:
        if old is APPEND:
            text += new
        else:
            assert old in text, f"test bug: {old!r} is not in the plan"
            text = text.replace(old, new, 1)
    return text


def _error(source, overrides=()) -> str:
    with pytest.raises(SimkitError) as info:
        load_plan(source, overrides)
    return str(info.value)


def test_base_plan_is_valid(write):
    plan = load_plan(write(PLAN))
    assert plan.training.grad_accum_steps == 4 and plan.parallelism.data_parallel == 1


@pytest.mark.parametrize("edits, expected", [c[1:] for c in PLAN_CASES], ids=[c[0] for c in PLAN_CASES])
def test_plan_error_text(write, edits, expected):
    path = write(_edit(PLAN, edits))
    assert _error(path) == expected.format(path=path)


# ----------------------------------------------------------------------------- whole-file problems
@pytest.mark.parametrize("text, expected", [
    ("", "{path}: the file is empty; expected a YAML mapping"),
    ("# only a comment\n", "{path}: the file is empty; expected a YAML mapping"),
    ("- model\n- training\n", "{path}:1: expected a mapping with model, training, hardware; got list"),
    ("just words\n", "{path}:1: expected a mapping with model, training, hardware; got str"),
], ids=["empty", "comments only", "list at top", "scalar at top"])
def test_file_error_text(write, text, expected):
    path = write(text)
    assert _error(path) == expected.format(path=path)


def test_missing_plan_file(tmp_path):
    path = tmp_path / "nope.yml"
    assert _error(path) == f"{path}: file not found"


def test_plan_path_is_a_directory(tmp_path):
    assert _error(tmp_path) == f"{tmp_path}: is a directory, expected a YAML file"


# ----------------------------------------------------------------------------- profiles
# A hand-written calibrated profile; lines: 1 name 2 kind 3 description 4 memory_gib 5 bandwidth
# 6 peak_tflops 7 fp32 8 bf16
PROFILE = CALIBRATED_PROFILE_HEAD + """\
  bf16: {value: 1e2, dense: true, source: "measured by simkit calibrate on testhost 2026-01-01"}
"""

PROFILE_CASES = [
    ("value without source", ('memory_gib: {value: 16, source: "measured by simkit calibrate on testhost 2026-01-01"}',
                              "memory_gib: {value: 16}"),
     "{path}:4: memory_gib: every value needs a non-empty 'source' (document or measurement)"),
    ("empty source", ('bandwidth_gb_per_s: {value: 500, source: "measured by simkit calibrate on testhost 2026-01-01"}',
                      'bandwidth_gb_per_s: {value: 500, source: " "}'),
     "{path}:5: memory_bandwidth_gb_per_s: every value needs a non-empty 'source' (document or measurement)"),
    ("bare number", ('memory_gib: {value: 16, source: "measured by simkit calibrate on testhost 2026-01-01"}',
                     "memory_gib: 16"),
     "{path}:4: memory_gib: 16 must be a mapping {{value: N, source: \"...\"}}"),
    ("value not a number", ("value: 16,", "value: sixteen,"),
     "{path}:4: memory_gib.value: 'sixteen' is not a number"),
    ("sparse peak", ("fp32: {value: 10, dense: true", "fp32: {value: 10, dense: false"),
     "{path}:7: peak_tflops.fp32.dense: sparse peaks are not accepted; give the dense figure (half the "
     "2:4-sparsity number) with dense: true"),
    ("unknown dtype", ("  fp32:", "  fp64:"),
     "{path}:7: peak_tflops.fp64: unknown key; did you mean 'fp16' or 'fp8' or 'fp32'?"),
    ("wrong kind", ("kind: device", "kind: system"),
     "{path}:2: kind: 'system' is not allowed here; expected kind: device"),
    ("missing required key", ('memory_bandwidth_gb_per_s: {value: 500, source: "measured by simkit calibrate on '
                               'testhost 2026-01-01"}\n', ""),
     "{path}:1: missing required key 'memory_bandwidth_gb_per_s' at the top level"),
    ("unknown key", ("description:", "descripton:"),
     "{path}:3: descripton: unknown key; did you mean 'description' or 'calibration'?"),
]


@pytest.mark.parametrize("edit, expected", [c[1:] for c in PROFILE_CASES], ids=[c[0] for c in PROFILE_CASES])
def test_profile_error_text(write, edit, expected):
    """A plan naming a bad profile reports the profile file and line (found next to the plan)."""
    profile = write(_edit(PROFILE, [edit]), "profile.yaml")
    plan = write(PLAN.replace("device: a100-80gb", "device: profile.yaml").replace("bf16", "fp32"))
    assert _error(plan) == expected.format(path=profile)


def test_valid_profile_loads_next_to_the_plan(write):
    write(PROFILE, "profile.yaml")
    plan = load_plan(write(PLAN.replace("device: a100-80gb", "device: profile.yaml")))
    assert plan.device.name == "my-gpu"
    assert plan.device.peak("bf16") == 100e12  # `1e2` is a number, not the string '1e2' of YAML 1.1


def test_rewritten_profile_is_read_again(write):
    """A profile rewritten in place (e.g. by a new `simkit calibrate`) must not come from a stale cache."""
    write(PROFILE, "profile.yaml")
    plan_path = write(PLAN.replace("device: a100-80gb", "device: profile.yaml"))
    assert load_plan(plan_path).device.memory_bytes == 16 * 2**30
    write(PROFILE.replace("value: 16,", "value: 32,  "), "profile.yaml")  # different size, so a new stamp
    assert load_plan(plan_path).device.memory_bytes == 32 * 2**30


# ----------------------------------------------------------------------------- --set overrides
SET_CASES = [
    ("no '='", "training.micro_batch_size",
     "--set 'training.micro_batch_size': expected KEY=VALUE, e.g. training.micro_batch_size=8"),
    ("unknown section", "trainin.micro_batch_size=4",
     "--set 'trainin.micro_batch_size=4': unknown section 'trainin'; did you mean 'training'?"),
    ("not SECTION.NAME", "training=4",
     "--set 'training=4': KEY must be SECTION.NAME, e.g. hardware.nodes=4"),
    ("unknown key", "training.micro_batch=4",
     "--set 'training.micro_batch=4': training.micro_batch: unknown key; did you mean 'micro_batch_size' or "
     "'global_batch_size' or 'cross_entropy'?"),
    ("bad value", "training.micro_batch_size=four",
     "--set 'training.micro_batch_size=four': training.micro_batch_size: 'four' is not an integer"),
    ("empty value", "training.micro_batch_size=",
     "--set 'training.micro_batch_size=': training.micro_batch_size: a value is required here, expected an integer"),
    ("value not YAML", "training.micro_batch_size=[4",
     "--set 'training.micro_batch_size=[4': the value is not valid YAML: did not find expected ',' or ']'"),
]


@pytest.mark.parametrize("override, expected", [c[1:] for c in SET_CASES], ids=[c[0] for c in SET_CASES])
def test_set_error_text(write, override, expected):
    assert _error(write(PLAN), [override]) == expected


def test_set_overrides_a_value(write):
    assert load_plan(write(PLAN), ["training.micro_batch_size=4"]).training.grad_accum_steps == 8


def test_error_kinds_covered():
    """The brief asks for at least 15 kinds of bad input; keep the count visible."""
    assert len(PLAN_CASES) + 4 + 2 + len(PROFILE_CASES) + len(SET_CASES) >= 15


# ----------------------------------------------------------------------------- property: batch arithmetic
def _batch_plan(micro: int, accum: int | None, dp: int, global_: int) -> dict:
    training = {"global_batch_size": global_, "micro_batch_size": micro, "precision": "bf16"}
    if accum is not None:
        training["grad_accum_steps"] = accum
    hardware = {"device": "a100-80gb", "devices_per_node": dp}
    if dp > 1:
        hardware["intra_node"] = "nvlink3"
    return {"model": {"n_layers": 2, "d_model": 64, "n_heads": 4, "vocab_size": 100, "seq_len": 32},
            "training": training, "parallelism": {"data_parallel": dp}, "hardware": hardware}


small = st.integers(min_value=1, max_value=64)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(micro=small, accum=small, dp=small)
def test_consistent_batch_loads_and_derives_accum(micro, accum, dp):
    plan = load_plan(_batch_plan(micro, None, dp, micro * accum * dp))
    assert plan.training.grad_accum_steps == accum
    assert plan.parallelism.data_parallel == dp


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(micro=small, accum=small, dp=small, off=st.integers(min_value=-10_000, max_value=10_000))
def test_global_batch_mismatching_given_accum_is_rejected(micro, accum, dp, off):
    global_ = micro * accum * dp + off
    assume(off != 0 and global_ > 0)
    with pytest.raises(SimkitError) as info:
        load_plan(_batch_plan(micro, accum, dp, global_))
    assert "global_batch_size" in str(info.value)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(micro=small, accum=small, dp=small, seed=st.integers(min_value=0, max_value=10_000))
def test_global_batch_not_a_multiple_is_rejected(micro, accum, dp, seed):
    per_step = micro * dp
    assume(per_step > 1)
    global_ = per_step * accum + 1 + seed % (per_step - 1)  # strictly between two multiples of per_step
    with pytest.raises(SimkitError) as info:
        load_plan(_batch_plan(micro, None, dp, global_))
    assert "global_batch_size" in str(info.value)


# ----------------------------------------------------------------------------- the CLI path
def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simkit", *args], capture_output=True, text=True, timeout=60)


def _has_predict() -> bool:
    try:
        import simkit.cli.predict  # noqa: F401
    except ImportError:
        return False
    return True


needs_predict = pytest.mark.skipif(not _has_predict(), reason="simkit/cli/predict.py is not written yet")


@needs_predict
@pytest.mark.parametrize("edits, expected", [c[1:] for c in PLAN_CASES], ids=[c[0] for c in PLAN_CASES])
def test_predict_prints_one_line_and_exits_2(write, runner, edits, expected):
    from simkit.cli import cli

    path = write(_edit(PLAN, edits))
    result = runner.invoke(cli, ["predict", str(path)])
    assert result.exit_code == 2
    assert result.stderr == f"error: {expected.format(path=path)}\n"
    assert result.stdout == ""


@needs_predict
@pytest.mark.parametrize("override, expected", [c[1:] for c in SET_CASES], ids=[c[0] for c in SET_CASES])
def test_predict_bad_set_prints_one_line(write, runner, override, expected):
    from simkit.cli import cli

    result = runner.invoke(cli, ["predict", str(write(PLAN)), "--set", override])
    assert result.exit_code == 2
    assert result.stderr == f"error: {expected}\n"


@needs_predict
@pytest.mark.parametrize("edit, expected", [c[1:] for c in PROFILE_CASES], ids=[c[0] for c in PROFILE_CASES])
def test_predict_bad_profile_prints_one_line(write, runner, edit, expected):
    from simkit.cli import cli

    profile = write(_edit(PROFILE, [edit]), "profile.yaml")
    plan = write(PLAN.replace("device: a100-80gb", "device: profile.yaml").replace("bf16", "fp32"))
    result = runner.invoke(cli, ["predict", str(plan)])
    assert result.exit_code == 2
    assert result.stderr == f"error: {expected.format(path=profile)}\n"


@needs_predict
def test_predict_missing_file(runner, tmp_path):
    from simkit.cli import cli

    result = runner.invoke(cli, ["predict", str(tmp_path / "nope.yml")])
    assert result.exit_code == 2
    assert result.stderr == f"error: {tmp_path / 'nope.yml'}: file not found\n"


@needs_predict
def test_predict_debug_reraises(write, runner):
    """Under --debug the command lets the SimkitError out (with its traceback) instead of one line."""
    from simkit.cli import cli

    result = runner.invoke(cli, ["--debug", "predict", str(write(_edit(PLAN, [("bf16", "fp64")])))])
    assert isinstance(result.exception, SimkitError)
    assert result.stderr == ""


@needs_predict
def test_predict_error_in_a_real_process_has_no_traceback(write):
    path = write(_edit(PLAN, [("precision: bf16", "precision: fp64")]))
    result = _cli("predict", str(path))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: {path}:12: training.precision: 'fp64' is not allowed; "
                                          "allowed: fp32 | tf32 | fp16 | bf16 | fp8"]


@needs_predict
def test_predict_debug_shows_a_traceback(write):
    path = write(_edit(PLAN, [("precision: bf16", "precision: fp64")]))
    result = _cli("--debug", "predict", str(path))
    assert "Traceback (most recent call last)" in result.stderr
    assert "SimkitError" in result.stderr


# ----------------------------------------------------------------------------- every error at once
MULTI_ERROR_PLAN = """\
model:
  n_layers: twelve
  d_model: 768
  n_heads: 11
  vocab_size: 50257
  seq_len: 1024
  d_ff: 1.0e+308
data:
  tokens: .nan
training:
  global_batch_size: 32
  micro_batch_size: 8
  precision: fp64
hardware:
  device: a100
parallelism:
  zero_stage: 4
"""
MULTI_ERRORS = [
    "{path}:2: model.n_layers: 'twelve' is not an integer",
    "{path}:4: model.n_heads: 11 does not divide d_model 768; allowed: a divisor of 768",
    "{path}:7: model.d_ff: 1e+308 is above the maximum 10000000 (the most simkit computes with)",
    "{path}:9: data.tokens: nan is not a finite number",
    "{path}:13: training.precision: 'fp64' is not allowed; allowed: fp32 | tf32 | fp16 | bf16 | fp8",
    "{path}:15: hardware.device: unknown device 'a100'; did you mean 'a10' or 'a100-80gb' or 'a100-40gb'?",
    "{path}:17: parallelism.zero_stage: 4 is above the maximum 3 (allowed 0..3)",
]


def test_every_independent_error_is_reported_at_once_sorted_by_line(write, runner):
    from simkit.cli import cli

    path = write(MULTI_ERROR_PLAN)
    assert _error(path).splitlines() == [e.format(path=path) for e in MULTI_ERRORS]
    result = runner.invoke(cli, ["predict", str(path)])
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [f"error: {e.format(path=path)}" for e in MULTI_ERRORS]


def test_errors_are_capped_at_20_lines_and_the_rest_counted(write, runner):
    from simkit.cli import cli

    path = write(PLAN.replace("  seq_len: 1024\n", "  seq_len: 1024\n" + "".join(f"  zz{i}: 1\n" for i in range(25))))
    result = runner.invoke(cli, ["predict", str(path)])
    lines = result.stderr.splitlines()
    assert result.exit_code == 2 and len(lines) == 21
    assert lines[0].startswith(f"error: {path}:7: model.zz0: unknown key; ")
    assert lines[-1] == "error: ... and 5 more errors (fix these and run again)"


def test_a_misspelt_required_key_is_one_error_not_two(write):
    path = write(PLAN.replace("  vocab_size:", "  vocab_sise:"))
    assert _error(path) == f"{path}:5: model.vocab_sise: unknown key; did you mean 'vocab_size' or 'positions'?"


def test_a_bad_value_does_not_cascade_into_the_checks_that_use_it(write):
    """n_layers is bad: the pipeline check that compares with it says nothing, the batch check still runs."""
    path = write(_edit(PLAN, [("n_layers: 12", "n_layers: -3"), ("global_batch_size: 32", "global_batch_size: 30"),
                              ("  device: a100-80gb\n", MULTI), (APPEND, PARALLEL + "  pipeline_parallel: 2\n")]))
    assert _error(path).splitlines() == [
        f"{path}:2: model.n_layers: -3 must be positive (> 0)",
        f"{path}:10: training.global_batch_size: 30 is not a multiple of micro_batch_size 8 x data_parallel 2 = 16"]


def test_set_errors_come_with_the_plan_errors(write):
    path = write(_edit(PLAN, [("precision: bf16", "precision: fp64")]))
    assert _error(path, ["training.micro_batch=4", "hardware.nodes=zero"]).splitlines() == [
        "--set 'training.micro_batch=4': training.micro_batch: unknown key; did you mean 'micro_batch_size' or "
        "'global_batch_size' or 'cross_entropy'?",
        "--set 'hardware.nodes=zero': hardware.nodes: 'zero' is not an integer",
        f"{path}:12: training.precision: 'fp64' is not allowed; allowed: fp32 | tf32 | fp16 | bf16 | fp8"]


def test_every_profile_error_is_reported_at_once(write):
    profile = write(_edit(PROFILE, [("kind: device", "kind: system"), ("description:", "descripton:"),
                                    ("value: 16,", "value: sixteen,")]), "profile.yaml")
    plan = write(PLAN.replace("device: a100-80gb", "device: profile.yaml").replace("bf16", "fp32"))
    assert _error(plan).splitlines() == [
        f"{profile}:2: kind: 'system' is not allowed here; expected kind: device",
        f"{profile}:3: descripton: unknown key; did you mean 'description' or 'calibration'?",
        f"{profile}:4: memory_gib.value: 'sixteen' is not a number"]


def test_the_alias_bomb_is_refused_in_well_under_a_second(write):
    import time

    path = write(BOMB)
    began = time.perf_counter()
    assert _error(path) == f"{path}:2: b.0: YAML aliases are not allowed (*a); write the value out"
    assert time.perf_counter() - began < 1.0


def test_corpus_size():
    """The issue asks for at least 40 kinds of bad plan; keep the count visible."""
    assert len(PLAN_CASES) >= 80
