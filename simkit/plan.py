"""The plan format (`plan.yml`): types, strict loading, presets, `--set` overrides and the derived
values (grad_accum_steps, data_parallel, hardware from a system preset, the device's native link).

Loading reports every independent problem of a plan at once. Each `_check_*` function reports with
`loc.report(key, message)` and carries on where its later checks stay meaningful (one that raises
`loc.error(...)` works too: its first problem is reported). A value that failed to build is BROKEN
(core/schema.py): a check that compares or computes with it is abandoned without a word, so a bad
value never adds errors that only follow from it, while checks of the other values still run.
"""
from __future__ import annotations

import copy
import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import numpy as np

from simkit import hardware as hw
from simkit.core.errors import Problems, SimkitError, close_names
from simkit.core.schema import BROKEN, Unusable, build, spec
from simkit.core.yamlio import Located, parse_yaml, read_yaml

Precision = Literal["fp32", "tf32", "fp16", "bf16", "fp8"]

# Upper bounds of the plan's numbers: 10-1000x beyond any published run (Megatron-LM's 1T model: 128
# layers, d_model 25600, 3072 GPUs; Llama 3: vocabulary 128256, 128K context, 15.6T tokens), and low
# enough that every product the simulator forms (parameters, FLOPs = 6 x parameters x tokens, seq_len^2
# attention scores, bytes) stays far inside float64 and int64. Beyond them nothing is computed.
_WHY = "the most simkit computes with"
LAYERS, WIDTH, HEADS, FF, VOCAB, SEQ = 100_000, 1_000_000, 100_000, 10_000_000, 100_000_000, 100_000_000
BATCH, PARALLEL, TOKENS, SAMPLES, EPOCHS, LINKS = 1_000_000_000, 1_000_000, 1e18, 1e16, 1e6, 1024


@dataclass(kw_only=True)
class ModelSpec:
    preset: Optional[str] = spec(None, doc="a preset name from simkit/presets/models.yaml")
    n_layers: int = spec(positive=True, maximum=LAYERS, why=_WHY, doc="transformer blocks")
    d_model: int = spec(positive=True, maximum=WIDTH, why=_WHY, doc="hidden width")
    n_heads: int = spec(positive=True, maximum=HEADS, why=_WHY, doc="attention heads")
    n_kv_heads: Optional[int] = spec(None, positive=True, maximum=HEADS, why=_WHY,
                                     doc="key/value heads (GQA); default n_heads")
    d_ff: Optional[int] = spec(None, positive=True, maximum=FF, why=_WHY, doc="MLP inner width; default 4 * d_model")
    mlp: Literal["gelu", "swiglu"] = spec("gelu", doc="MLP kind")
    vocab_size: int = spec(positive=True, maximum=VOCAB, why=_WHY, doc="vocabulary size")
    seq_len: int = spec(positive=True, maximum=SEQ, why=_WHY, doc="tokens per sequence")
    causal: bool = spec(True, doc="decoder (true) or encoder (false)")
    tied_embeddings: bool = spec(True, doc="the LM head shares the token embedding")
    attention: Literal["fused", "eager"] = spec("fused", doc="fused (flash/SDPA) or eager (scores materialized)")
    attention_kernel: Literal["default", "flash-attention-1", "flash-attention-2", "flash-attention-3", "cudnn",
                              "memory-efficient"] = spec(
        "default", doc="the fused-attention kernel; default: what current stacks run on the device's generation")
    kernels: Optional[Literal["fused", "eager"]] = spec(
        None, doc="fused kernels (Megatron/TransformerEngine, torch.compile: norms in the compute dtype, fused "
        "SwiGLU, RoPE) or eager PyTorch ops under autocast (fp32 norms, unfused SwiGLU); default: fused with "
        "tensor/pipeline/context parallelism or optimizer-side master weights (Megatron-Core, NeMo), else eager "
        "(PyTorch DDP/FSDP stacks: torchtitan, llm-foundry, HF Trainer)")
    dropout: float = spec(0.0, minimum=0.0, maximum=0.99, doc="dropout probability (masks are kept when > 0)")
    norm: Literal["layernorm", "rmsnorm"] = spec("layernorm", doc="the block's normalization")
    predicted_fraction: float = spec(
        1.0, minimum=0.001, maximum=1.0, doc="share of positions the LM head and loss run on: 1 for causal LMs "
        "and HF's BERT, the masked share for NVIDIA's BERT (max_predictions_per_seq / seq_len)")
    positions: Literal["none", "learned", "rope", "alibi"] = spec(
        "none", doc="position information: none, learned embeddings (GPT-2, BERT), rotary (Llama), ALiBi (MPT)")


@dataclass(kw_only=True)
class DataSpec:
    tokens: Optional[float] = spec(None, positive=True, maximum=TOKENS, why=_WHY, doc="training tokens per epoch")
    samples: Optional[float] = spec(None, positive=True, maximum=SAMPLES, why=_WHY,
                                    doc="sequences per epoch (tokens = samples * seq_len)")
    epochs: float = spec(1.0, positive=True, maximum=EPOCHS, why=_WHY, doc="passes over the data")


@dataclass(kw_only=True)
class TrainingSpec:
    global_batch_size: int = spec(positive=True, maximum=BATCH, why=_WHY, doc="sequences per optimizer step")
    micro_batch_size: int = spec(positive=True, maximum=BATCH, why=_WHY,
                                 doc="sequences per device per forward/backward")
    grad_accum_steps: Optional[int] = spec(None, positive=True, maximum=BATCH, why=_WHY,
                                           doc="micro-steps per step; derived when absent")
    precision: Precision = spec("bf16")
    optimizer: Literal["adamw", "adam", "lamb", "sgd"] = spec("adamw")
    activation_checkpointing: Literal["none", "selective", "full"] = spec("none")
    selective_checkpointing: Literal["attention", "ops", "layers"] = spec(
        "attention", doc="with activation_checkpointing: selective, what is recomputed: attention (Megatron: the "
        "attention core), ops (torchtitan op-level: every other matmul and the elementwise ops), layers (torchtitan: "
        "every n-th layer in full)")
    checkpoint_every_n_layers: int = spec(2, positive=True, maximum=LAYERS, why=_WHY,
                                          doc="with selective_checkpointing: layers, the n")
    master_weights: Optional[Literal["model", "optimizer"]] = spec(
        None, doc="model: fp32 weights, autocast casts them each micro-step (PyTorch AMP, FSDP); optimizer: 16-bit "
        "weights, fp32 master copy in the optimizer (Megatron, NeMo, DeepSpeed); default optimizer for zero_stage 1 "
        "and 2 (distributed optimizer) and for tensor/pipeline/context parallelism without ZeRO (Megatron's "
        "Float16Module), else model")
    fp8_recipe: Literal["delayed", "current", "mxfp8", "blockwise"] = spec(
        "delayed", doc="with precision fp8, TransformerEngine's scaling: delayed (amax history, TE's default), "
        "current (per-tensor current scaling), mxfp8 (1x32 blocks, Blackwell), blockwise (1x128 / 128x128)")
    cross_entropy: Literal["fused", "fp32"] = spec(
        "fused", doc="fused: logits kept in the compute dtype, gradient in place (flash-attn, TE, Megatron fused CE); "
        "fp32: logits cast to fp32 and the log-softmax kept (torch autocast)")


@dataclass(kw_only=True)
class ParallelismSpec:
    data_parallel: Optional[int] = spec(None, positive=True, maximum=PARALLEL, why=_WHY,
                                        doc="default: devices / (tp * pp * cp)")
    tensor_parallel: int = spec(1, positive=True, maximum=PARALLEL, why=_WHY,
                                doc="Megatron column/row split of every layer")
    pipeline_parallel: int = spec(1, positive=True, maximum=PARALLEL, why=_WHY, doc="pipeline stages (1F1B schedule)")
    virtual_pipeline_stages: int = spec(1, positive=True, maximum=PARALLEL, why=_WHY,
                                        doc="model chunks per pipeline rank; > 1 = interleaved 1F1B")
    context_parallel: int = spec(1, positive=True, maximum=PARALLEL, why=_WHY,
                                 doc="ranks the sequence is split over (ring attention)")
    sequence_parallel: bool = spec(True, doc="Megatron SP: norms/dropout sharded over the TP group (no effect at TP 1)")
    tp_comm_overlap: bool = spec(False, doc="TP collectives overlapped with the GEMMs (userbuffers / async TP)")
    zero_stage: int = spec(0, minimum=0, maximum=3, doc="0..3; FSDP FULL_SHARD = 3; 1 = distributed optimizer")


@dataclass(kw_only=True)
class HardwareSpec:
    system: Optional[str] = spec(None)
    device: Optional[str] = spec(None, doc="catalogue name or path to a calibrated profile")
    devices_per_node: Optional[int] = spec(None, positive=True, maximum=PARALLEL, why=_WHY)
    nodes: int = spec(1, positive=True, maximum=PARALLEL, why=_WHY)
    intra_node: Optional[str] = spec(None)
    inter_node: Optional[str] = spec(None)
    inter_node_links: Optional[int] = spec(None, positive=True, maximum=LINKS, why=_WHY)


@dataclass(kw_only=True)
class PlanSpec:
    model: ModelSpec
    data: Optional[DataSpec] = None
    training: TrainingSpec
    parallelism: ParallelismSpec = dataclasses.field(default_factory=ParallelismSpec)
    hardware: HardwareSpec


@dataclass(frozen=True)
class Plan:
    """A validated plan with every derived value filled in and hardware resolved."""

    spec: PlanSpec
    device: hw.Device
    intra_node: hw.Interconnect | None
    inter_node: hw.Interconnect | None
    source: str = "<dict>"
    raw: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)
    """The plan as written (presets expanded), before anything was derived: reload it with other overrides."""
    assumptions: tuple[str, ...] = ()
    """What loading filled in that the plan did not say (e.g. the intra-node link), for `predict` to show."""

    # shorthands used by the simulator
    @property
    def model(self) -> ModelSpec:
        return self.spec.model

    @property
    def training(self) -> TrainingSpec:
        return self.spec.training

    @property
    def parallelism(self) -> ParallelismSpec:
        return self.spec.parallelism

    @property
    def hw(self) -> HardwareSpec:
        return self.spec.hardware

    @property
    def n_devices(self) -> int:
        return self.hw.devices_per_node * self.hw.nodes

    @property
    def tokens_per_epoch(self) -> float | None:
        data = self.spec.data
        if data is None:
            return None
        return data.tokens if data.tokens is not None else data.samples * self.model.seq_len


# ----------------------------------------------------------------------------- presets
@functools.lru_cache(maxsize=1)
def model_presets() -> dict[str, dict]:
    path = Path(__file__).resolve().parent / "presets" / "models.yaml"
    return read_yaml(path).data


# ----------------------------------------------------------------------------- overrides
def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """'training.micro_batch_size=8' -> (('training', 'micro_batch_size'), 8)."""
    if "=" not in text:
        raise SimkitError(f"--set {text!r}: expected KEY=VALUE, e.g. training.micro_batch_size=8")
    key, value = text.split("=", 1)
    parts = tuple(p for p in key.strip().split("."))
    if len(parts) != 2 or not all(parts):
        raise SimkitError(f"--set {text!r}: KEY must be SECTION.NAME, e.g. hardware.nodes=4")
    try:
        parsed = parse_yaml(value).data if value.strip() else None
    except SimkitError as exc:
        raise SimkitError(f"--set {text!r}: the value is {exc.message}") from None
    return parts, parsed


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...]) -> dict:
    return _apply_overrides(raw, overrides, None)[0]


def _apply_overrides(raw: dict, overrides, problems: Problems | None) -> tuple[dict, dict]:
    """(`raw` with the overrides applied, key path -> '--set ...' for each applied). With `problems`,
    every bad override is reported there and left out; without, the first one raises."""
    raw, origins = copy.deepcopy(raw), {}
    sections = [f.name for f in dataclasses.fields(PlanSpec)]
    for text in overrides:
        try:
            (section, key), value = parse_override(text)
            if section not in sections:
                raise SimkitError(f"--set {text!r}: unknown section {section!r}; {close_names(section, sections)}")
        except SimkitError as exc:
            if problems is None:
                raise
            problems.add(exc)
            continue
        if not isinstance(raw.get(section), dict):
            raw[section] = {}
        raw[section][key] = value
        origins[(section, key)] = f"--set {text!r}"
    return raw, origins


# ----------------------------------------------------------------------------- loading
def _expand_preset(loc: Located) -> None:
    model = loc.data.get("model")
    if not isinstance(model, dict) or model.get("preset") is None:
        return
    name = model["preset"]
    presets = model_presets()
    if not isinstance(name, str) or name not in presets:
        loc.report(("model", "preset"), f"unknown preset {name!r}; {close_names(str(name), list(presets))}")
        loc.data["model"] = BROKEN  # its other keys may come from the preset: checking them would mislead
        return
    merged = {k: v for k, v in presets[name].items() if k != "source"}
    merged.update(model)
    loc.data["model"] = merged


def _resolve_hardware(loc: Located, spec_: PlanSpec) -> tuple | None:
    """(device, intra-node link, inter-node link), or None after reporting why not. Fills the counts
    (devices_per_node, inter_node_links) from the system first, so other checks can use them."""
    h, problems = spec_.hardware, loc.problems
    before = len(problems)
    system = problems.call(hw.load_system, h.system, loc, ("hardware", "system")) if h.system else None
    if h.system and system is None:
        return None  # the device, counts and links may all have come from it
    if h.devices_per_node is None:
        h.devices_per_node = system.devices_per_node if system else 1
    if h.inter_node_links is None:
        h.inter_node_links = system.inter_node_links if system else 1
    if h.device is None and system is None:
        loc.report(("hardware",), "missing required key 'device' (or give a 'system')")
        return None
    h.device = h.device or system.device
    if h.intra_node is None and system is not None:
        h.intra_node = system.intra_node
    if h.inter_node is None and system is not None:
        h.inter_node = system.inter_node
    device = problems.call(hw.load_device, h.device, loc, ("hardware", "device"))
    intra = problems.call(hw.load_interconnect, h.intra_node, loc, ("hardware", "intra_node")) if h.intra_node else None
    inter = problems.call(hw.load_interconnect, h.inter_node, loc, ("hardware", "inter_node")) if h.inter_node else None
    if device is None or not problems.ok_since(before):
        return None
    has_measured_comm = device.calibration is not None and bool(device.calibration.collectives)
    if h.devices_per_node > 1 and intra is None and not has_measured_comm and device.native_link:
        intra = hw.load_interconnect(device.native_link)
        h.intra_node = device.native_link
    if h.devices_per_node > 1 and intra is None and not has_measured_comm:
        loc.report(("hardware", "intra_node"),
                   "required when devices_per_node > 1 (an interconnect name, e.g. nvlink3 or pcie4), "
                   "or use a profile calibrated with --comm")
    has_measured_inter = device.calibration is not None and bool(device.calibration.collectives_inter)
    if h.nodes > 1 and inter is None and not has_measured_inter:
        loc.report(("hardware", "inter_node"), "required when nodes > 1 (e.g. ib-hdr, roce-200g, eth-100g), "
                   "or use a profile calibrated across nodes (calibrate --comm --nnodes N)")
    return (device, intra, inter) if problems.ok_since(before) else None


def _assumptions(loc: Located, plan_hw: HardwareSpec, device: hw.Device, intra: hw.Interconnect | None) -> tuple:
    """What the plan left out and loading filled in from the catalogue, in words."""
    if intra is None or loc.written(("hardware", "intra_node")) or plan_hw.system or plan_hw.devices_per_node == 1:
        return ()
    return (f"intra-node link: {intra.name}, the native link of {device.name} (its device file, native_link); "
            "set hardware.intra_node to use another",)


def _check_model(loc: Located, m: ModelSpec) -> None:
    if m.n_kv_heads is None:
        m.n_kv_heads = m.n_heads
    if m.d_ff is None:
        m.d_ff = 4 * m.d_model
    if m.d_model % m.n_heads:
        loc.report(("model", "n_heads"), f"{m.n_heads} does not divide d_model {m.d_model}; "
                   f"allowed: a divisor of {m.d_model}")
    if m.n_heads % m.n_kv_heads:
        loc.report(("model", "n_kv_heads"), f"{m.n_kv_heads} does not divide n_heads {m.n_heads}; "
                   "allowed: a divisor of n_heads")


# The layout rules, written once for a plan (scalars: `_check_model_parallel` raises the message) and for
# the columns of a sweep or a search (numpy arrays: the engine flags each row with the reason). Each rule:
# (key, invalid(v), reason, message(v)), where v maps the names below to values or arrays.
LAYOUT_RULES = (
    (("parallelism", "tensor_parallel"), lambda v: v["n_heads"] % v["tensor_parallel"] != 0,
     "tensor_parallel does not divide n_heads",
     lambda v: f"{v['tensor_parallel']} does not divide n_heads {v['n_heads']}; allowed: a divisor of n_heads"),
    (("parallelism", "tensor_parallel"), lambda v: v["n_kv_heads"] % v["tensor_parallel"] != 0,
     "tensor_parallel does not divide n_kv_heads",
     lambda v: f"{v['tensor_parallel']} does not divide n_kv_heads {v['n_kv_heads']}; allowed: a divisor of "
               "n_kv_heads (Megatron splits the key/value heads over the TP group)"),
    (("parallelism", "pipeline_parallel"), lambda v: v["pipeline_parallel"] > v["n_layers"],
     "pipeline_parallel is more than n_layers",
     lambda v: f"{v['pipeline_parallel']} is more than n_layers {v['n_layers']}; allowed: 1..{v['n_layers']}"),
    (("parallelism", "virtual_pipeline_stages"),
     lambda v: (v["virtual_pipeline_stages"] > 1) & (v["pipeline_parallel"] == 1),
     "virtual_pipeline_stages > 1 needs pipeline_parallel > 1",
     lambda v: f"{v['virtual_pipeline_stages']} needs pipeline_parallel > 1 (model chunks per pipeline rank)"),
    (("parallelism", "virtual_pipeline_stages"),
     lambda v: v["pipeline_parallel"] * v["virtual_pipeline_stages"] > v["n_layers"],
     "pipeline_parallel x virtual_pipeline_stages is more than n_layers",
     lambda v: f"pipeline_parallel {v['pipeline_parallel']} x virtual_pipeline_stages "
               f"{v['virtual_pipeline_stages']} = {v['pipeline_parallel'] * v['virtual_pipeline_stages']} model "
               f"chunks for {v['n_layers']} layers; each chunk needs a layer (allowed: at most "
               f"{v['n_layers'] // v['pipeline_parallel']})"),
    (("parallelism", "context_parallel"), lambda v: v["seq_len"] % v["context_parallel"] != 0,
     "context_parallel does not divide seq_len",
     lambda v: f"{v['context_parallel']} does not divide seq_len {v['seq_len']}; allowed: a divisor of seq_len"),
    (("parallelism", "context_parallel"), lambda v: (v["context_parallel"] > 1) & (v["attention"] != "fused"),
     "context_parallel > 1 needs model.attention: fused",
     lambda v: f"{v['context_parallel']} needs model.attention: fused (ring attention runs fused kernels)"),
)


def _check_model_parallel(loc: Located, s: PlanSpec) -> None:
    """Divisibility of heads, layers and sequence by the model-parallel sizes (LAYOUT_RULES)."""
    p, m = s.parallelism, s.model
    values = {"n_heads": m.n_heads, "n_kv_heads": m.n_kv_heads, "n_layers": m.n_layers, "seq_len": m.seq_len,
              "attention": m.attention, "tensor_parallel": p.tensor_parallel,
              "pipeline_parallel": p.pipeline_parallel, "virtual_pipeline_stages": p.virtual_pipeline_stages,
              "context_parallel": p.context_parallel}
    # one problem per key (the first rule it breaks), and none about virtual stages when the pipeline
    # itself is wrong: a later rule of a key assumes the earlier ones hold
    blamed: set[tuple] = set()
    for key, invalid, _, message in LAYOUT_RULES:
        if key in blamed or (key[1] == "virtual_pipeline_stages" and ("parallelism", "pipeline_parallel") in blamed):
            continue
        if invalid(values):
            loc.report(key, message(values))
            blamed.add(key)


def _model_parallel_key(loc: Located, p: ParallelismSpec) -> tuple:
    """The model-parallel size to blame when their product does not divide the devices: the first one
    written that is above 1 (tensor_parallel when none is)."""
    for name in ("tensor_parallel", "pipeline_parallel", "context_parallel"):
        if getattr(p, name) > 1 and loc.written(("parallelism", name)):
            return ("parallelism", name)
    return ("parallelism", "tensor_parallel")


def _check_parallelism(loc: Located, s: PlanSpec) -> None:
    p, t, h = s.parallelism, s.training, s.hardware
    if h.devices_per_node is None:  # the hardware section could not be resolved
        return
    devices = h.devices_per_node * h.nodes
    model_parallel = p.tensor_parallel * p.pipeline_parallel * p.context_parallel
    sizes = (f"tensor_parallel {p.tensor_parallel} x pipeline_parallel {p.pipeline_parallel} x context_parallel "
             f"{p.context_parallel}")
    if p.data_parallel is None:
        if devices % model_parallel:
            loc.report(_model_parallel_key(loc, p),
                       f"{sizes} = {model_parallel} does not divide the {devices} devices "
                       f"(devices_per_node {h.devices_per_node} x nodes {h.nodes})")
            return  # no data_parallel to check the batch against
        p.data_parallel = devices // model_parallel
    if p.data_parallel * model_parallel != devices:
        loc.report(("parallelism", "data_parallel"),
                   f"data_parallel {p.data_parallel} x {sizes} = {p.data_parallel * model_parallel} != "
                   f"{devices} devices (devices_per_node {h.devices_per_node} x nodes {h.nodes})")
        return
    per_step = t.micro_batch_size * p.data_parallel
    if t.grad_accum_steps is None:
        if t.global_batch_size % per_step:
            loc.report(("training", "global_batch_size"),
                       f"{t.global_batch_size} is not a multiple of micro_batch_size {t.micro_batch_size} x "
                       f"data_parallel {p.data_parallel} = {per_step}")
            return
        t.grad_accum_steps = t.global_batch_size // per_step
    elif per_step * t.grad_accum_steps != t.global_batch_size:
        loc.report(("training", "grad_accum_steps"),
                   f"global_batch_size {t.global_batch_size} != micro_batch_size {t.micro_batch_size} x "
                   f"grad_accum_steps {t.grad_accum_steps} x data_parallel {p.data_parallel} = "
                   f"{per_step * t.grad_accum_steps}")


def default_master_weights(zero_stage, tensor_parallel=1, pipeline_parallel=1, context_parallel=1):
    """Where the fp32 master weights live when a plan does not say (see _derive_stack); the parallel sizes
    may be arrays (one per sweep row), and then so is the answer."""
    model_parallel = (np.asarray(tensor_parallel) > 1) | (np.asarray(pipeline_parallel) > 1) \
        | (np.asarray(context_parallel) > 1)
    optimizer = (zero_stage in (1, 2)) | (model_parallel & (zero_stage == 0))
    if np.ndim(optimizer) == 0:
        return "optimizer" if optimizer else "model"
    return np.where(optimizer, "optimizer", "model")


def megatron_layout(tensor_parallel, pipeline_parallel, context_parallel, master_weights):
    """True where a layout is Megatron-Core / NeMo territory (fused kernels by default); scalars or arrays."""
    return ((tensor_parallel > 1) | (pipeline_parallel > 1) | (context_parallel > 1)
            | (master_weights == "optimizer"))


def _derive_stack(s: PlanSpec) -> None:
    """What a plan that does not say runs on, inferred from its layout. Megatron's and DeepSpeed's optimizer
    sharding (ZeRO 1 and 2) keep 16-bit weights with an fp32 master copy in the optimizer; PyTorch DDP and
    FSDP keep fp32 weights under autocast. Tensor, pipeline and context parallelism and optimizer-side
    master weights are Megatron-Core / NeMo territory, which runs TransformerEngine's fused kernels; plain
    DDP or FSDP is a PyTorch-native stack (torchtitan, llm-foundry, HF Trainer) running eager ops. Megatron-LM
    also keeps 16-bit weights and fp32 main params in its optimizer without the distributed optimizer
    (Float16Module + Float16OptimizerWithFloat16Params), so tensor, pipeline or context parallelism without
    ZeRO defaults to optimizer-side master weights too. The sweep and search engine derives the same per row
    (simkit/search/engine.py)."""
    t, p, m = s.training, s.parallelism, s.model
    if t.master_weights is None:
        t.master_weights = default_master_weights(p.zero_stage, p.tensor_parallel, p.pipeline_parallel,
                                                  p.context_parallel)
    if m.kernels is None:
        megatron = megatron_layout(p.tensor_parallel, p.pipeline_parallel, p.context_parallel, t.master_weights)
        m.kernels = "fused" if megatron else "eager"


def _check_checkpointing(loc: Located, s: PlanSpec) -> None:
    """The selective-checkpointing keys only mean something with activation_checkpointing: selective."""
    t = s.training
    for key, needs in (("selective_checkpointing", "selective"), ("checkpoint_every_n_layers", "selective")):
        if loc.written(("training", key)) and t.activation_checkpointing != needs:
            loc.report(("training", key), f"only applies with activation_checkpointing: {needs} "
                                          f"(it is {t.activation_checkpointing!r})")
    if loc.written(("training", "fp8_recipe")) and t.precision != "fp8":
        loc.report(("training", "fp8_recipe"), f"only applies with precision: fp8 (it is {t.precision!r})")
    if loc.written(("training", "checkpoint_every_n_layers")) and t.selective_checkpointing != "layers":
        loc.report(("training", "checkpoint_every_n_layers"),
                   f"only applies with selective_checkpointing: layers (it is {t.selective_checkpointing!r})")


def _check_data(loc: Located, s: PlanSpec) -> None:
    d = s.data
    if d is None:
        return
    if d.tokens is not None and d.samples is not None:
        loc.report(("data", "samples"), "give either 'tokens' or 'samples', not both")
    if d.tokens is None and d.samples is None:
        loc.report(("data",), "missing required key 'tokens' or 'samples'")


def _check_precision(loc: Located, s: PlanSpec, device: hw.Device) -> None:
    dtype = s.training.precision
    if device.peak(dtype) is None:
        have = ", ".join(device.peak_flop_per_s)
        loc.report(("training", "precision"),
                   f"{dtype!r} is not supported by device {device.name!r}; allowed: {have}")
    # TransformerEngine's MXFP8 recipe scales 1x32 blocks in hardware, which only Blackwell tensor cores do
    # (TE docs, "Using FP8 with Transformer Engine": MXFP8 requires compute capability 10.0 or newer).
    if dtype == "fp8" and s.training.fp8_recipe == "mxfp8" and device.architecture not in (None, "blackwell"):
        loc.report(("training", "fp8_recipe"),
                   f"'mxfp8' needs Blackwell tensor cores; device {device.name!r} is {device.architecture}; "
                   "allowed here: delayed | current | blockwise")

def _check(loc: Located, check, *args) -> Any:
    """Run one check; a check that raises instead of reporting has its problem reported too, and one
    that touches a BROKEN value stops there (its result is then None), as does one that meets a derived
    value left unset (None) because an earlier problem stopped its derivation."""
    try:
        with loc.problems.guard():
            return check(loc, *args)
    except Unusable:
        pass
    except TypeError:
        if not len(loc.problems):  # no earlier problem explains it: a bug in simkit
            raise
    return None


def load_plan_located(loc: Located) -> Plan:
    """A Plan from parsed YAML; every independent problem is raised at once (SimkitErrors)."""
    if not isinstance(loc.data, dict):
        raise loc.error((), f"expected a mapping with model, training, hardware; got {type(loc.data).__name__}")
    _check(loc, _expand_preset)
    raw = copy.deepcopy(loc.data)
    s = build(PlanSpec, loc.data, loc, partial=True)
    _check(loc, _check_model, s.model)
    resolved = _check(loc, _resolve_hardware, s)
    _check(loc, _check_model_parallel, s)
    _check(loc, _check_parallelism, s)
    _check(loc, _check_data, s)
    _check(loc, _check_checkpointing, s)
    if not len(loc.problems):
        _derive_stack(s)
    if resolved:
        _check(loc, _check_precision, s, resolved[0])
    loc.problems.raise_if_any()
    device, intra, inter = resolved
    return Plan(spec=s, device=device, intra_node=intra, inter_node=inter, source=loc.file or "<dict>",
                raw=raw, assumptions=_assumptions(loc, s.hardware, device, intra))


def read_raw(source: Any, overrides: list[str] | tuple[str, ...] = ()) -> dict:
    """The plan as written (a path, mapping or Plan), its preset expanded and `overrides` applied, before any
    validation: what `simkit optimize` re-lays out, whether or not its own layout is valid."""
    if isinstance(source, Plan):
        data = copy.deepcopy(source.raw)
    elif isinstance(source, (str, Path)):
        data = read_yaml(source).data
    elif isinstance(source, dict):
        data = copy.deepcopy(source)
    else:
        raise SimkitError(f"cannot load a plan from {type(source).__name__}; give a path or a mapping")
    if not isinstance(data, dict):
        raise SimkitError(f"expected a mapping with model, training, hardware; got {type(data).__name__}")
    loc = Located(data=apply_overrides(data, overrides) if overrides else data)
    _expand_preset(loc)
    loc.problems.raise_if_any()
    return loc.data


def load_plan(source: Any, overrides: list[str] | tuple[str, ...] = ()) -> Plan:
    """A plan from a path, a mapping, or a Plan (returned as is when there are no overrides)."""
    if isinstance(source, Plan) and not overrides:
        return source
    if isinstance(source, (str, Path)):
        loc = read_yaml(source)
    elif isinstance(source, Located):      # a file read once, loaded with many overrides (sweep, optimize)
        loc = Located(data=copy.deepcopy(source.data), file=source.file, lines=source.lines)
    elif isinstance(source, dict):
        loc = Located(data=copy.deepcopy(source), file=None, lines={})
    else:
        raise SimkitError(f"cannot load a plan from {type(source).__name__}; give a path or a mapping")
    if overrides:
        if not isinstance(loc.data, dict):
            raise loc.error((), "expected a mapping")
        problems = Problems()  # the bad overrides are reported with the plan's own problems
        data, origins = _apply_overrides(loc.data, overrides, problems)
        loc = Located(data=data, file=loc.file, lines=loc.lines, origins=origins, problems=problems)
    return load_plan_located(loc)
