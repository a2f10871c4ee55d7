"""`simkit validate --implementation hf`: the plan's model built as a Hugging Face transformers class
(GPT-2, Llama, BERT from config objects, random init), trained for one step on the CPU, the CLI path,
the refusals and the error when transformers is missing."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

from simkit.cli import cli  # noqa: E402
from simkit.core.errors import SimkitError  # noqa: E402
from simkit.measure import hf_models  # noqa: E402
from simkit.plan import load_plan  # noqa: E402
from simkit.validate import live as v  # noqa: E402

MISSING_LINE = ("error: --implementation hf needs the transformers package, which is not installed; "
                "install it with: pip install 'simkit[hf]'\n")
D, L, FF, V, S = 64, 2, 128, 256, 32
BASE = {"n_layers": L, "d_model": D, "n_heads": 4, "d_ff": FF, "vocab_size": V, "seq_len": S, "kernels": "eager"}
GPT2 = dict(BASE, mlp="gelu", causal=True, tied_embeddings=True, attention="fused")
LLAMA = dict(BASE, mlp="swiglu", n_kv_heads=2, causal=True, tied_embeddings=True, attention="fused")
BERT = dict(BASE, mlp="gelu", causal=False, tied_embeddings=False, attention="eager")
TRAINING = {"global_batch_size": 2, "micro_batch_size": 2, "precision": "fp32", "optimizer": "sgd",
            "cross_entropy": "fp32"}
TINY_HF_YAML = """\
model: {n_layers: 2, d_model: 64, n_heads: 4, d_ff: 128, vocab_size: 256, seq_len: 32, kernels: eager}
training: {global_batch_size: 2, micro_batch_size: 2, precision: fp32, optimizer: sgd, cross_entropy: fp32}
hardware: {devices_per_node: 1}
"""
CPU_PROFILE = str(Path(__file__).resolve().parent.parent / "hardware" / "devices" / "cpu.yaml")


def plan_of(model: dict, **training):
    return load_plan({"model": model, "training": dict(TRAINING, **training), "hardware": {"device": "cpu"}})


def sections(plan):
    import dataclasses

    spec = dataclasses.asdict(plan.spec)
    return spec["model"], spec["training"]


def planned_params(plan) -> int:
    from simkit.model.workload import parameter_count

    m = plan.model
    return int(parameter_count(m.n_layers, m.d_model, m.n_heads, m.n_kv_heads, m.d_ff, m.vocab_size, m.mlp,
                               m.tied_embeddings))


# ----------------------------------------------------------------------------- which class, which config
def test_family_of_each_model_kind():
    assert [hf_models.family(sections(plan_of(m))[0]) for m in (GPT2, LLAMA, BERT)] == ["gpt2", "llama", "bert"]


@pytest.mark.parametrize("model, text", [
    (dict(GPT2, n_kv_heads=2), "no Hugging Face class for grouped-query attention with a GELU MLP"),
    (dict(BERT, mlp="swiglu"), "no Hugging Face class for an encoder with a SwiGLU MLP"),
    (dict(BERT, n_kv_heads=2), "no Hugging Face class for an encoder with grouped-query attention"),
])
def test_models_without_an_hf_class_are_refused(model, text):
    with pytest.raises(SimkitError, match=text):
        hf_models.family(sections(plan_of(model))[0])


def test_selective_attention_checkpointing_is_refused_with_a_sentence():
    plan = plan_of(GPT2, activation_checkpointing="selective")
    assert hf_models.support_error(*sections(plan)) == (
        "--implementation hf: selective_checkpointing: attention has no Hugging Face equivalent (HF checkpoints "
        "whole layers); use activation_checkpointing: full, or selective with selective_checkpointing: layers")
    with pytest.raises(SimkitError, match="selective_checkpointing: attention has no Hugging Face equivalent"):
        v.validate_live(plan, steps=1, warmup=0, implementation="hf")


def test_gpt2_config_and_parameter_count():
    pytest.importorskip("transformers")
    plan = plan_of(dict(GPT2, dropout=0.1))
    module, info = hf_models.build(*sections(plan))
    hf = module.hf
    assert type(hf).__name__ == "GPT2LMHeadModel" and info["class"] == "GPT2LMHeadModel"
    c = hf.config
    assert (c.n_layer, c.n_embd, c.n_head, c.n_inner, c.vocab_size, c.n_positions) == (L, D, 4, FF, V, S)
    assert (c.resid_pdrop, c.embd_pdrop, c.attn_pdrop) == (0.1, 0.1, 0.1)
    assert info["attn_implementation"] == "sdpa" and hf.lm_head.weight is hf.transformer.wte.weight
    # the plan's count plus biases (c_attn 3d, c_proj d, c_fc d_ff, mlp c_proj d) and learned positions (S x d)
    assert info["n_params"] == planned_params(plan) + L * (3 * D + D + FF + D) + S * D == 85_504


def test_llama_config_and_parameter_count():
    pytest.importorskip("transformers")
    plan = plan_of(LLAMA)
    module, info = hf_models.build(*sections(plan))
    c = module.hf.config
    assert info["class"] == "LlamaForCausalLM"
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads,
            c.intermediate_size) == (L, D, 4, 2, FF)
    # no biases; RMSNorm has a weight only: d per norm where the plan counts LayerNorm's 2d
    assert info["n_params"] == planned_params(plan) - L * 2 * D - D == 90_432


def test_bert_config_and_parameter_count():
    pytest.importorskip("transformers")
    plan = plan_of(BERT)
    module, info = hf_models.build(*sections(plan))
    hf = module.hf
    assert info["class"] == "BertForMaskedLM" and info["attn_implementation"] == "eager"
    assert hf.cls.predictions.decoder.weight is not hf.bert.embeddings.word_embeddings.weight   # untied, as planned
    # plan + biases per layer (q, k, v, o, intermediate, output) + positions + token types (2 x d) + the MLM
    # head transform (d x d + d, LayerNorm 2d) + the decoder bias (V); BERT's embedding LayerNorm (2d) stands
    # where the plan counts a final norm (2d)
    extra = L * (4 * D + FF + D) + S * D + 2 * D + (D * D + D + 2 * D) + V
    assert info["n_params"] == planned_params(plan) + extra == 106_560


def test_full_checkpointing_recomputes_whole_layers():
    pytest.importorskip("transformers")
    module, _ = hf_models.build(*sections(plan_of(GPT2, activation_checkpointing="full")))
    on = getattr(type(module.hf), "is_activation_checkpointing", None)    # transformers 5; 4 has the old name
    assert module.hf.is_activation_checkpointing if on is not None else module.hf.is_gradient_checkpointing


def test_selective_layers_checkpoints_every_nth_layer():
    transformers = pytest.importorskip("transformers")
    plan = plan_of(GPT2, activation_checkpointing="selective", selective_checkpointing="layers",
                   checkpoint_every_n_layers=2)
    if int(transformers.__version__.split(".")[0]) < 5:
        assert "selective_checkpointing: layers needs transformers >= 5" in hf_models.support_error(*sections(plan))
        return
    module, _ = hf_models.build(*sections(plan))
    assert [block.gradient_checkpointing for block in module.hf.transformer.h] == [True, False]


# ----------------------------------------------------------------------------- one real step
@pytest.mark.parametrize("model, cls", [(GPT2, "GPT2LMHeadModel"), (LLAMA, "LlamaForCausalLM"),
                                        (BERT, "BertForMaskedLM")], ids=["gpt2", "llama", "bert"])
def test_one_hf_training_step_on_the_cpu(model, cls):
    pytest.importorskip("transformers")
    from simkit.measure import training

    config = v.worker_config(plan_of(model, precision="bf16"), steps=1, warmup=0, threads=1, device="cpu",
                             implementation="hf")
    config["measure_memory"] = False
    result = training.run(config)
    assert result["implementation"] == "hf" and result["step_time_s"] > 0
    assert result["hf_model"]["class"] == cls and result["breakdown_s"]["backward"] > 0
    assert result["n_params"] == result["hf_model"]["n_params"]


def test_two_process_ddp_trains_the_hf_model():
    """Under torchrun every parameter must get a gradient: BERT's untied output bias is tied back (see build)."""
    pytest.importorskip("transformers")
    plan = load_plan({"model": BERT, "training": dict(TRAINING, global_batch_size=4), "parallelism": {"data_parallel": 2},
                      "hardware": {"device": "cpu", "devices_per_node": 2, "intra_node": "pcie4"}})
    result = v.validate_live(plan, steps=1, warmup=0, implementation="hf")
    assert result["measured"]["environment"]["world_size"] == 2
    assert result["measured"]["hf_model"]["class"] == "BertForMaskedLM"


# ----------------------------------------------------------------------------- CLI
def test_cli_implementation_hf_on_a_tiny_plan(runner, write, tmp_path):
    pytest.importorskip("transformers")
    record = tmp_path / "results.jsonl"
    result = runner.invoke(cli, ["validate", str(write(TINY_HF_YAML)), "--profile", CPU_PROFILE, "--steps", "1",
                                 "--warmup", "0", "--threads", "1", "--implementation", "hf", "--json",
                                 "--record", str(record)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["implementation"] == "hf" and doc["measured"]["hf_model"]["class"] == "GPT2LMHeadModel"
    assert doc["measured"]["step_time_s"] > 0 and doc["predicted"]["step_time_s"] > 0
    assert any(n.startswith("ran the Hugging Face model GPT2LMHeadModel (transformers ") for n in doc["notes"])
    assert "HF GPT2LMHeadModel has 85,504 parameters, the plan 82,560 (+3.6%)" in doc["notes"]
    assert json.loads(record.read_text())["implementation"] == "hf"


def test_cli_text_marks_the_hf_plan(runner, write):
    pytest.importorskip("transformers")
    result = runner.invoke(cli, ["validate", str(write(TINY_HF_YAML)), "--profile", CPU_PROFILE, "--steps", "1",
                                 "--warmup", "0", "--threads", "1", "--implementation", "hf"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].endswith(f"plan.yml [hf]   profile: {CPU_PROFILE}")


def test_cli_without_transformers_says_how_to_install_it(runner, write, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)    # `import transformers` raises ImportError
    for target in (["validate", str(write(TINY_HF_YAML))], ["validate", "--suite", str(write(TINY_HF_YAML).parent)]):
        result = runner.invoke(cli, target + ["--profile", CPU_PROFILE, "--implementation", "hf"])
        assert result.exit_code == 2
        assert result.output == MISSING_LINE


def test_validate_live_without_transformers(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(SimkitError) as err:
        v.validate_live(plan_of(GPT2), steps=1, warmup=0, implementation="hf")
    assert str(err.value) == MISSING_LINE[len("error: "):-1]


def test_implementation_applies_to_live_runs_only(runner):
    result = runner.invoke(cli, ["validate", "--published", "x.yaml", "--implementation", "hf"])
    assert result.exit_code == 2
    assert result.output == "error: --implementation applies to live runs (PLAN or --suite), not --published\n"


# ----------------------------------------------------------------------------- notes and the suite
def test_notes_say_where_the_plan_disagrees_with_hf():
    notes = hf_models.differences(*sections(plan_of(dict(LLAMA, kernels="fused", dropout=0.1),
                                                    cross_entropy="fused")), 90_432, 90_752)
    assert notes[0] == "HF LlamaForCausalLM has 90,432 parameters, the plan 90,752 (-0.4%)"
    text = " | ".join(notes)
    for part in ("RMSNorm with an fp32 upcast", "rotary embeddings", "drops out only the attention probabilities",
                 "the plan says kernels: fused", "the plan says cross_entropy: fused", "upcasts the logits with .float()",
                 "SDPA with dropout runs the math (materialized) kernel"):
        assert part in text


def test_hf_suite_covers_gpt2_llama_and_bert():
    from simkit.core.yamlio import read_yaml

    folder = Path(__file__).resolve().parent.parent / "examples" / "validation-hf"
    plans = [load_plan(p, ["hardware.device=cpu", "hardware.intra_node=pcie4"]) for p in v.suite_plans(folder)]
    families = [hf_models.family(sections(p)[0]) for p in plans]
    assert {"gpt2", "llama", "bert"} <= set(families) and len(plans) >= 8
    for path, plan in zip(v.suite_plans(folder), plans):
        raw = read_yaml(path).data
        # the keys describe what HF runs: eager kernels, an fp32 loss, stated explicitly
        assert raw["model"]["kernels"] == "eager" and raw["training"]["cross_entropy"] == "fp32", path
        assert hf_models.support_error(*sections(plan)) is None
    assert {p.parallelism.data_parallel for p in plans} == {1, 2}
    assert {p.training.precision for p in plans} == {"fp32", "bf16"}
