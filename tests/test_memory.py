"""Memory per device: model states per ZeRO stage and precision, FSDP's gathered layers, every published
run fitting, what to change when a plan does not fit, and the predicted peak against torch's measured
peak on this CPU."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest

from simkit.core.yamlio import Located
from simkit.model.memory import model_states
from simkit.model.precision import policy
from simkit.model.step import predict
from simkit.plan import load_plan, load_plan_located
from simkit.search.advice import fit_advice
from simkit.validate.published import load_published_files

DATA = Path(__file__).parent / "data"
GIB = 2**30


# ----------------------------------------------------------------------------- model states
@pytest.mark.parametrize("stage, expected", [(0, (4 + 2, 4, 8)), (1, (4 + 2, 4, 8 / 8)), (2, (4 + 2, 4 / 8, 8 / 8)),
                                             (3, (4 / 8, 4 / 8, 8 / 8))])
def test_zero_stages_shard_autocast_model_states(stage, expected):
    # PyTorch AMP: fp32 weights (+ the bf16 autocast copy), fp32 gradients, two fp32 Adam states; ZeRO
    # (Rajbhandari et al. 2020, Fig. 1) shards states (1), + gradients (2), + weights (3) over 8 ranks
    w, g, s, _ = model_states(params_local=1.0, params_per_layer_local=0.0, prec=policy("bf16", "model"),
                              optimizer="adamw", zero_stage=stage, shard_group=8, grads_at_peak=1.0)
    assert (float(w), float(g), float(s)) == pytest.approx(expected)


@pytest.mark.parametrize("stage, expected", [(0, 2 + 4 + 12), (1, 2 + 4 + 12 / 64), (2, 2 + 4 / 64 + 12 / 64)])
def test_megatron_distributed_optimizer_model_states(stage, expected):
    # Megatron-LM: 16-bit weights, fp32 main gradients, fp32 master + 2 Adam states (12 bytes) in the
    # optimizer; the distributed optimizer (ZeRO-1) shards the 12 bytes
    w, g, s, _ = model_states(params_local=1.0, params_per_layer_local=0.0, prec=policy("bf16", "optimizer"),
                              optimizer="adam", zero_stage=stage, shard_group=64, grads_at_peak=1.0)
    assert float(w + g + s) == pytest.approx(expected)


def test_fsdp_holds_two_gathered_layers_and_one_unsharded_gradient():
    # FSDP: the layer being computed and the prefetched one in bf16, plus one layer's unsharded gradient
    per_layer = 200e6
    *_, gathered = model_states(params_local=1e9, params_per_layer_local=per_layer, prec=policy("bf16", "model"),
                                optimizer="adamw", zero_stage=3, shard_group=64, grads_at_peak=1.0)
    assert float(gathered) == pytest.approx(3 * per_layer * 2)


@pytest.mark.parametrize("master, dp, expected", [("model", 8, 4.0), ("model", 1, 0.0), ("optimizer", 8, 0.0)])
def test_torch_ddp_buckets_copy_every_gradient(master, dp, expected):
    # torch DDP (PyTorch AMP: master weights in the model) allocates buckets for every parameter, a flat fp32
    # copy of the gradients ("gradient_as_bucket_view ... saved memory equal to the total gradients size",
    # DDP docs); one rank has no DDP; Megatron's DDP reduces from its own main-grad buffer (no copy)
    *_, buffers = model_states(params_local=1.0, params_per_layer_local=0.0, prec=policy("bf16", master),
                               optimizer="adamw", zero_stage=0, shard_group=dp, grads_at_peak=1.0)
    assert float(buffers) == pytest.approx(expected)


def test_master_weights_default_follows_the_zero_stage():
    base = {"model": {"preset": "gpt2-124m"}, "training": {"global_batch_size": 8, "micro_batch_size": 1},
            "hardware": {"system": "dgx-a100-80gb"}}
    for stage, expected in ((0, "model"), (1, "optimizer"), (2, "optimizer"), (3, "model")):
        plan = load_plan(dict(copy.deepcopy(base), parallelism={"zero_stage": stage}))
        assert plan.training.master_weights == expected


# ----------------------------------------------------------------------------- published runs fit
def test_every_published_run_is_predicted_to_fit():
    # every case in both files ran on its hardware, so it must fit
    misses = []
    for case in load_published_files([DATA / "published-dev.yaml", DATA / "published-dev-2.yaml"]):
        plan = load_plan_located(Located(copy.deepcopy(case.plan.data), case.plan.file, case.plan.lines))
        pred = predict(plan)
        if not pred.fits_in_memory:
            misses.append(f"{case.id}: {pred.memory_per_device_bytes / GIB:.1f} GiB")
    assert not misses


def test_reserved_peak_and_context_sit_on_top_of_the_allocated_peak():
    pred = predict(load_plan(Path(__file__).parents[1] / "examples" / "llama3-70b-64xh100.yml"))
    assert pred.memory_reserved_peak_bytes > pred.memory_allocated_peak_bytes
    assert pred.memory_per_device_bytes == pytest.approx(pred.memory_reserved_peak_bytes + pred.memory_context_bytes)
    assert pred.memory_allocated_peak_bytes == pytest.approx(sum(pred.memory_breakdown_bytes.values()))


def test_a_plan_that_does_not_fit_gets_changes_that_do():
    plan = load_plan(Path(__file__).parents[1] / "examples" / "llama3-70b-64xh100.yml",
                     ["parallelism.pipeline_parallel=1", "parallelism.virtual_pipeline_stages=1",
                      "parallelism.data_parallel=null", "training.grad_accum_steps=null"])
    assert not predict(plan).fits_in_memory
    advice = fit_advice(plan)
    assert advice and all(a.memory_per_device_bytes <= 80 * GIB for a in advice)
    assert [a.step_time_s for a in advice] == sorted(a.step_time_s for a in advice)
    for a in advice:   # each advised change, applied, fits
        sets = [s.strip() for s in a.change.split("--set") if s.strip()]
        fixed = load_plan(plan.raw, sets + ["parallelism.data_parallel=null", "training.grad_accum_steps=null"])
        assert predict(fixed).fits_in_memory


# ----------------------------------------------------------------------------- measured on this CPU
TINY = {"model": {"n_layers": 2, "d_model": 128, "n_heads": 4, "d_ff": 512, "vocab_size": 4096, "seq_len": 128},
        "training": {"global_batch_size": 4, "micro_batch_size": 4, "optimizer": "adamw"},
        "hardware": {"device": "cpu"}}


@pytest.mark.parametrize("precision, implementation, loss, mlp", [
    ("fp32", "eager", "fp32", "gelu"), ("bf16", "eager", "fp32", "swiglu"), ("bf16", "fused", "fused", "swiglu"),
    ("fp32", "fused", "fused", "gelu")])
def test_tiny_model_peak_memory_matches_torch_on_this_cpu(precision, implementation, loss, mlp):
    torch = pytest.importorskip("torch")
    import dataclasses

    from simkit.measure.training import Trainer, profile_memory_step

    plan = load_plan(TINY, [f"training.precision={precision}", f"model.kernels={implementation}",
                            f"training.cross_entropy={loss}", f"model.mlp={mlp}"])
    model = dataclasses.asdict(plan.model)
    model.pop("preset", None)
    trainer = Trainer({"model": model, "training": dataclasses.asdict(plan.training)}, torch.device("cpu"), False)
    trainer.step()
    measured = profile_memory_step(trainer)["allocated_peak_bytes"]
    predicted = predict(plan).memory_allocated_peak_bytes
    assert predicted == pytest.approx(measured, rel=0.15)
