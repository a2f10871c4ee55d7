"""The plan's model built with Hugging Face transformers (`simkit validate --implementation hf`).

Built from a config object with random weights (nothing is downloaded) and trained by the same loop as
simkit's own model (simkit.measure.training.Trainer): autocast, GradScaler, DDP, accumulation. Which
class a plan becomes:

- causal, GELU MLP, n_kv_heads == n_heads  -> GPT2LMHeadModel
- causal, SwiGLU MLP (any n_kv_heads)      -> LlamaForCausalLM
- encoder (causal: false), GELU MLP         -> BertForMaskedLM

The HF model computes its own loss from `labels` = random tokens: GPT-2 and Llama shift them by one
(ForCausalLMLoss, on `.float()` logits), BERT scores every position (no label is -100, so the masked-LM
loss covers all tokens, as simkit's own encoder does). What the HF classes do beyond the plan's keys is
listed by `differences`. `transformers` is an optional dependency (`pip install 'simkit[hf]'`); torch
and transformers are imported inside functions only.
"""
from __future__ import annotations

from simkit.core.errors import SimkitError

MISSING = ("--implementation hf needs the transformers package, which is not installed; "
           "install it with: pip install 'simkit[hf]'")

CLASSES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "bert": "BertForMaskedLM"}
# GELU for the GPT-2 and BERT MLPs: F.gelu, the kernel simkit's own model runs and `simkit calibrate`
# times; GPT2Config's default "gelu_new" is the same curve written as 8 elementwise PyTorch ops.
GELU = "gelu"


def transformers_version() -> str:
    """The installed transformers version; SimkitError(MISSING) when it cannot be imported."""
    try:
        import transformers
    except ImportError:
        raise SimkitError(MISSING) from None
    return transformers.__version__


def family(m: dict) -> str:
    """'gpt2', 'llama' or 'bert' for a plan's model section (a dict of ModelSpec fields)."""
    grouped = m["n_kv_heads"] != m["n_heads"]
    if m["causal"] and m["mlp"] == "swiglu":
        return "llama"
    if m["causal"] and not grouped:
        return "gpt2"
    if not m["causal"] and m["mlp"] == "gelu" and not grouped:
        return "bert"
    what = "grouped-query attention with a GELU MLP" if m["causal"] else \
        "an encoder with " + ("a SwiGLU MLP" if m["mlp"] == "swiglu" else "grouped-query attention")
    raise SimkitError(f"--implementation hf has no Hugging Face class for {what}; it builds GPT-2 (causal, gelu), "
                      "Llama (causal, swiglu, any n_kv_heads) or BERT (causal: false, gelu, n_kv_heads = n_heads)")


def support_error(m: dict, t: dict) -> str | None:
    """Why this plan cannot be trained as an HF model, or None."""
    try:
        family(m)
    except SimkitError as exc:
        return exc.message
    if t["activation_checkpointing"] != "selective":
        return None
    if t["selective_checkpointing"] != "layers":
        return (f"--implementation hf: selective_checkpointing: {t['selective_checkpointing']} has no Hugging Face "
                "equivalent (HF checkpoints whole layers); use activation_checkpointing: full, or selective with "
                "selective_checkpointing: layers")
    if not _has_every_n_layers():
        return (f"--implementation hf: selective_checkpointing: layers needs transformers >= 5 (every_n_layers); "
                f"this is transformers {transformers_version()}: use activation_checkpointing: full")
    return None


def _has_every_n_layers() -> bool:
    import transformers

    return hasattr(transformers.PreTrainedModel, "activation_checkpointing_enable")


def config_for(m: dict):
    """The transformers config object of the plan's model (dropout, tying, attention kernel from the plan)."""
    import transformers

    fam, p = family(m), float(m.get("dropout", 0.0))
    attn = "sdpa" if m["attention"] == "fused" else "eager"
    common = dict(vocab_size=m["vocab_size"], tie_word_embeddings=m["tied_embeddings"], use_cache=False)
    if fam == "gpt2":
        cfg = transformers.GPT2Config(n_layer=m["n_layers"], n_embd=m["d_model"], n_head=m["n_heads"],
                                      n_inner=m["d_ff"], n_positions=m["seq_len"], activation_function=GELU,
                                      resid_pdrop=p, embd_pdrop=p, attn_pdrop=p, bos_token_id=0, eos_token_id=0,
                                      **common)
    elif fam == "llama":
        cfg = transformers.LlamaConfig(hidden_size=m["d_model"], intermediate_size=m["d_ff"],
                                       num_hidden_layers=m["n_layers"], num_attention_heads=m["n_heads"],
                                       num_key_value_heads=m["n_kv_heads"], max_position_embeddings=m["seq_len"],
                                       attention_dropout=p, bos_token_id=0, eos_token_id=0, **common)
    else:
        cfg = transformers.BertConfig(hidden_size=m["d_model"], intermediate_size=m["d_ff"],
                                      num_hidden_layers=m["n_layers"], num_attention_heads=m["n_heads"],
                                      max_position_embeddings=m["seq_len"], hidden_act=GELU, hidden_dropout_prob=p,
                                      attention_probs_dropout_prob=p, pad_token_id=0, **common)
    cfg._attn_implementation = attn
    return cfg


def _enable_checkpointing(model, checkpointing: str, every_n: int) -> None:
    """Whole-layer recomputation (HF's GradientCheckpointingLayer), non-reentrant as simkit's own model;
    'selective' with the layers policy checkpoints every n-th layer (transformers >= 5 has every_n_layers)."""
    if checkpointing == "none":
        return
    every = every_n if checkpointing == "selective" else 1
    if _has_every_n_layers():
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False},
                                              every_n_layers=every)
    else:   # transformers 4: whole model only (support_error refuses every_n > 1 before this)
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def _loss_module():
    import torch.nn as nn

    class HFLoss(nn.Module):
        """Wraps an HF model so that `model(tokens, targets)` returns its loss, as simkit's Transformer does."""

        def __init__(self, hf):
            super().__init__()
            self.hf = hf

        def forward(self, tokens, targets):
            return self.hf(input_ids=tokens, labels=targets).loss

    return HFLoss


def build(m: dict, t: dict):
    """(module whose forward(tokens, targets) returns the loss, description dict) for a plan's model and
    training sections; random init in fp32 on the CPU."""
    import transformers

    transformers.logging.set_verbosity_error()   # config notices about unused token ids and the loss type
    cfg = config_for(m)
    cls = getattr(transformers, CLASSES[family(m)])
    hf = cls(cfg)
    if family(m) == "bert":
        # transformers 5 ties the MLM output bias (cls.predictions.bias) to the decoder's only together with the
        # word embeddings; untied, a second, unused bias of vocab_size is left over, which DDP refuses
        hf.cls.predictions.bias = hf.cls.predictions.decoder.bias
    hf.train()
    _enable_checkpointing(hf, t["activation_checkpointing"], t.get("checkpoint_every_n_layers", 2))
    info = {"class": cls.__name__, "transformers_version": transformers.__version__,
            "attn_implementation": cfg._attn_implementation,
            "n_params": sum(p.numel() for p in hf.parameters())}   # tied weights are listed once
    return _loss_module()(hf), info


def differences(m: dict, t: dict, hf_params: int | None = None, plan_params: float | None = None) -> list[str]:
    """What the HF class runs that the plan's keys do not describe (for the notes of a validation)."""
    fam = family(m)
    notes = []
    if hf_params and plan_params:
        notes.append(f"HF {CLASSES[fam]} has {hf_params:,} parameters, the plan {plan_params:,.0f} "
                     f"({100 * (hf_params / plan_params - 1):+.1f}%)")
    if fam == "gpt2":
        notes.append("HF GPT-2 has biases in every linear layer (Conv1D: addmm) and learned position embeddings "
                     f"({m['seq_len']} x {m['d_model']}), added to the token embedding; separate q/k/v come from one "
                     "c_attn GEMM as in the plan")
    elif fam == "llama":
        notes.append("HF Llama runs q, k, v and gate, up as separate GEMMs (5 where the plan counts 2), RMSNorm with "
                     "an fp32 upcast (to(float32), pow, mean, rsqrt, mul, cast, mul: 7 ops where the plan counts one "
                     "LayerNorm kernel), rotary embeddings on q and k in every layer (cos/sin, rotate_half, cat, 2 mul, "
                     "add) and silu(gate) * up as 2 unfused ops")
        if float(m.get("dropout", 0.0)) > 0:
            notes.append("HF Llama drops out only the attention probabilities (attention_dropout); the plan's dropout "
                         "also masks the attention and MLP outputs")
    else:
        notes.append("HF BERT is post-LN (LayerNorm after each residual add), has biases in every linear layer, "
                     "learned position and token-type embeddings with an embedding LayerNorm, and an MLM head "
                     f"transform (dense {m['d_model']} x {m['d_model']}, GELU, LayerNorm) before the decoder, which "
                     "has an output bias; the loss covers every position")
    if fam in ("gpt2", "llama"):
        notes.append("HF's causal-LM loss upcasts the logits with .float() and shifts the labels (the last position "
                     "is ignored)")
    if m.get("kernels") == "fused":
        notes.append("the plan says kernels: fused, but HF models run plain PyTorch ops under autocast "
                     "(kernels: eager describes them)")
    if t.get("cross_entropy") == "fused":
        notes.append("the plan says cross_entropy: fused, but HF computes F.cross_entropy on fp32 logits "
                     "(cross_entropy: fp32 describes it)")
    if m["attention"] == "fused" and float(m.get("dropout", 0.0)) > 0:
        notes.append("SDPA with dropout runs the math (materialized) kernel on a CPU")
    return notes
