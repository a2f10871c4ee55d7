"""The keys that say which software stack a plan runs on (kernels, attention kernel, FP8 recipe, selective
checkpointing, master weights): exact error text when they are misused, and the defaults a plan gets when
it does not say (plan._derive_stack)."""
from __future__ import annotations

import pytest

from simkit.core.errors import SimkitError
from simkit.plan import load_plan

# 1 model:  2 n_layers  3 d_model  4 n_heads  5 vocab_size  6 seq_len  7 data:  8 tokens  9 training:
# 10 global_batch_size  11 micro_batch_size  12 precision  13 hardware:  14 device  15 devices_per_node
# 16 intra_node  17 parallelism:  18 data_parallel
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
  global_batch_size: 64
  micro_batch_size: 8
  precision: bf16
hardware:
  device: h100-sxm
  devices_per_node: 8
  intra_node: nvlink4
parallelism:
  data_parallel: 8
"""


def _plan(write, edits=(), extra_training="", extra_model="", extra_parallel=""):
    text = PLAN
    for old, new in edits:
        assert old in text, f"test bug: {old!r} is not in the plan"
        text = text.replace(old, new, 1)
    text = text.replace("  seq_len: 1024\n", "  seq_len: 1024\n" + extra_model)
    text = text.replace("  precision:", extra_training + "  precision:") if extra_training else text
    text += extra_parallel
    return write(text)


def _error(path) -> str:
    with pytest.raises(SimkitError) as info:
        load_plan(path)
    return str(info.value)


CASES = [
    ("fp8 recipe without fp8", dict(extra_training="  fp8_recipe: current\n"),
     "{path}:12: training.fp8_recipe: only applies with precision: fp8 (it is 'bf16')"),
    ("mxfp8 on hopper", dict(edits=[("precision: bf16", "precision: fp8")], extra_training="  fp8_recipe: mxfp8\n"),
     "{path}:12: training.fp8_recipe: 'mxfp8' needs Blackwell tensor cores; device 'h100-sxm' is hopper; "
     "allowed here: delayed | current | blockwise"),
    ("unknown recipe", dict(edits=[("precision: bf16", "precision: fp8")], extra_training="  fp8_recipe: e5m2\n"),
     "{path}:12: training.fp8_recipe: 'e5m2' is not allowed; allowed: delayed | current | mxfp8 | blockwise"),
    ("fp8 on ampere", dict(edits=[("precision: bf16", "precision: fp8"), ("h100-sxm", "a100-80gb"),
                                  ("nvlink4", "nvlink3")]),
     "{path}:12: training.precision: 'fp8' is not supported by device 'a100-80gb'; allowed: fp32, tf32, fp16, bf16"),
    ("selective policy without selective", dict(extra_training="  selective_checkpointing: ops\n"),
     "{path}:12: training.selective_checkpointing: only applies with activation_checkpointing: selective "
     "(it is 'none')"),
    ("every n layers without layers", dict(extra_training="  activation_checkpointing: selective\n"
                                                           "  checkpoint_every_n_layers: 3\n"),
     "{path}:13: training.checkpoint_every_n_layers: only applies with selective_checkpointing: layers "
     "(it is 'attention')"),
    ("every 0 layers", dict(extra_training="  activation_checkpointing: selective\n"
                                            "  selective_checkpointing: layers\n  checkpoint_every_n_layers: 0\n"),
     "{path}:14: training.checkpoint_every_n_layers: 0 must be positive (> 0)"),
    ("unknown attention kernel", dict(extra_model="  attention_kernel: flash-attention-4\n"),
     "{path}:7: model.attention_kernel: 'flash-attention-4' is not allowed; allowed: default | flash-attention-1 | "
     "flash-attention-2 | flash-attention-3 | cudnn | memory-efficient"),
    ("unknown kernels", dict(extra_model="  kernels: triton\n"),
     "{path}:7: model.kernels: 'triton' is not allowed; allowed: fused | eager"),
    ("unknown master weights", dict(extra_training="  master_weights: both\n"),
     "{path}:12: training.master_weights: 'both' is not allowed; allowed: model | optimizer"),
]


@pytest.mark.parametrize("kwargs, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_stack_key_errors(write, kwargs, expected):
    path = _plan(write, **kwargs)
    message = _error(path)
    assert message == expected.format(path=path)


def test_mxfp8_loads_on_blackwell(write):
    path = _plan(write, edits=[("precision: bf16", "precision: fp8"), ("h100-sxm", "b200"), ("nvlink4", "nvlink5")],
                 extra_training="  fp8_recipe: mxfp8\n")
    assert load_plan(path).training.fp8_recipe == "mxfp8"


@pytest.mark.parametrize("extra_parallel, zero, kernels, master", [
    ("", None, "eager", "model"),                                         # PyTorch DDP under autocast
    ("  zero_stage: 3\n", 3, "eager", "model"),                           # FSDP keeps fp32 weights
    ("  zero_stage: 1\n", 1, "fused", "optimizer"),                       # Megatron distributed optimizer
    ("  tensor_parallel: 2\n", None, "fused", "optimizer"),  # Megatron: Float16Module + fp32 main params
    ("  tensor_parallel: 2\n  zero_stage: 3\n", 3, "fused", "model"),     # FSDP keeps fp32 weights, even with TP
])
def test_stack_defaults_follow_the_layout(write, extra_parallel, zero, kernels, master):
    if "tensor_parallel" in extra_parallel:
        path = _plan(write, edits=[("data_parallel: 8", "data_parallel: 4")], extra_parallel=extra_parallel)
    else:
        path = _plan(write, extra_parallel=extra_parallel)
    plan = load_plan(path)
    assert (plan.model.kernels, plan.training.master_weights) == (kernels, master)


def test_written_stack_keys_win_over_the_defaults(write):
    path = _plan(write, extra_model="  kernels: fused\n", extra_training="  master_weights: optimizer\n")
    plan = load_plan(path)
    assert (plan.model.kernels, plan.training.master_weights) == ("fused", "optimizer")
