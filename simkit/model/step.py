"""predict(): composes workload, cost, memory and parallelism models into a Prediction.

The core (`simulate`) works on numpy arrays so that `simkit sweep` evaluates thousands of
configurations in one call; `predict` runs it on one plan. Pure: no I/O, no printing.

One step, per pipeline (parallel/pipeline.py), with m = grad_accum_steps micro-batches per pipeline:
    step = pipeline schedule of m micro-batches through the stages
             (each stage: forward + backward + recompute + exposed tensor/context-parallel communication)
         + exposed pipeline sends + gradient accumulation and cast work + optimizer step
         + exposed data-parallel communication.
Without pipeline parallelism the schedule is m x (one micro-batch on the single stage).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from simkit.hardware import Device, Interconnect
from simkit.model import cost
from simkit.model.comm.collectives import Fabric, collective_time, p2p_time
from simkit.model.comm.topology import Group, Placement, place
from simkit.model.compute import MicroBatchTimes, micro_batch_times
from simkit.model.memory import (ActivationPolicy, ActivationTerms, LayerDims, MemoryBreakdown, StageMemoryInputs,
                                 activation_terms, busiest, memory_per_device)
from simkit.model.parallel import context, pipeline, tensor
from simkit.model.params import value as fitted
from simkit.model.parallel.data import StepCompute, data_parallel_comm
from simkit.model.precision import policy
from simkit.model.workload import Kernels, Shape, parameter_count

# Bytes moved per parameter by one optimizer step (fp32 params, grads and states, multi-tensor
# kernels): AdamW reads p, g, m, v and writes p, m, v (7 x 4 B); LAMB adds a second pass for the
# trust ratio (read p and the update, write p: 3 x 4 B) (You et al. 2020, Algorithm 2); SGD with
# momentum reads p, g, m and writes p, m (5 x 4 B).
OPTIMIZER_BYTES_PER_PARAM = {"adamw": 28, "adam": 28, "lamb": 40, "sgd": 20}
LOSS_SCALING_BYTES_PER_PARAM = 8   # fp16 GradScaler: unscale (read+write) and the inf/nan check

BREAKDOWN_KEYS = ("forward", "backward", "recompute", "optimizer", "pipeline_bubble", "communication_exposed",
                  "communication_total", "other")
COMM_KINDS = ("tensor", "context", "pipeline", "data")


@dataclass
class Categorical:
    """The non-numeric part of a configuration (constant within one vectorized evaluation)."""

    device: Device
    intra_node: Interconnect | None
    inter_node: Interconnect | None
    precision: str
    optimizer: str
    checkpointing: str
    attention: str
    mlp: str
    causal: bool
    tied: bool
    zero_stage: int
    sequence_parallel: bool = True
    tp_comm_overlap: bool = False
    selective: str = "attention"        # what selective checkpointing recomputes (see compute.py)
    checkpoint_every: int = 2           # with selective == "layers"
    master_weights: str = "model"       # precision.py: fp32 weights under autocast, or 16-bit + fp32 master
    cross_entropy: str = "fused"        # memory.logits_bytes
    implementation: str = "fused"       # fused kernels or eager PyTorch ops (memory.ActivationPolicy)
    dropout: bool = False               # dropout probability > 0
    fp8_recipe: str = "delayed"         # workload._fp8_casts
    attention_kernel: str = "default"   # model/attention.py
    norm: str = "layernorm"
    positions: str = "none"
    predicted_fraction: float = 1.0


@dataclass(kw_only=True)
class Numeric:
    """Numeric plan values (scalars or equal-length arrays)."""

    n_layers: object
    d_model: object
    n_heads: object
    n_kv_heads: object
    d_ff: object
    vocab_size: object
    seq_len: object
    global_batch_size: object
    micro_batch_size: object
    grad_accum_steps: object
    data_parallel: object
    tensor_parallel: object
    devices_per_node: object
    nodes: object
    inter_node_links: object
    tokens_per_epoch: object = np.nan
    epochs: object = 1.0
    pipeline_parallel: object = 1
    virtual_pipeline_stages: object = 1
    context_parallel: object = 1


@dataclass
class Prediction:
    step_time_s: float
    step_time_interval_s: tuple[float, float]
    samples_per_s: float
    tokens_per_s: float
    iterations_per_epoch: int | None
    epoch_time_s: float | None
    total_time_s: float | None
    mfu: float
    memory_per_device_bytes: float
    """What the device must hold: the reserved peak plus the CUDA context."""
    memory_breakdown_bytes: dict[str, float]
    memory_capacity_bytes: float
    fits_in_memory: bool
    breakdown_s: dict[str, float]
    parameters: float
    model_flop_per_step: float
    device_hours: float | None = None
    cost_usd: float | None = None
    step_time_interval_coverage: float | None = None
    """The share of real runs `step_time_interval_s` is meant to hold (model/uncertainty.py), e.g. 0.8."""
    memory_allocated_peak_bytes: float = 0.0
    """torch.cuda.max_memory_allocated: model states, activations and buffers at the peak."""
    memory_reserved_peak_bytes: float = 0.0
    """torch.cuda.max_memory_reserved: the allocated peak plus what the caching allocator keeps."""
    memory_context_bytes: float = 0.0
    """CUDA context and library workspaces, outside PyTorch's allocator."""
    communication_s: dict[str, dict[str, float]] = field(default_factory=dict)
    """Per kind (tensor, context, pipeline, data): seconds per step, 'exposed' and 'total'."""
    pipeline: dict = field(default_factory=dict)
    """Layers per stage, bubble fraction, micro-batches in flight (pipeline_parallel > 1)."""
    placement: list[str] = field(default_factory=list)
    """Which parallel groups run over the inter-node links."""
    warnings: list[str] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        out = asdict(self)
        out["step_time_interval_s"] = list(self.step_time_interval_s)
        return out


# ----------------------------------------------------------------------------- stages
@dataclass
class StageTime:
    """One pipeline stage's seconds per micro-batch, by part (arrays)."""

    fwd: object
    bwd: object
    rec: object
    tensor: object     # exposed tensor-parallel communication
    context: object    # exposed context-parallel (ring attention) communication
    other: object      # kernel launches not hidden behind GPU work

    _total: object = field(default=None, repr=False, compare=False)   # computed once

    @property
    def comm(self):
        return self.tensor + self.context

    @property
    def total(self):
        if self._total is None:
            self._total = self.fwd + self.bwd + self.rec + self.comm + self.other
        return self._total

    def pick(self, mask, other: "StageTime") -> "StageTime":
        picked = StageTime(*(np.where(mask, getattr(self, k), getattr(other, k))
                             for k in ("fwd", "bwd", "rec", "tensor", "context", "other")))
        picked._total = np.where(mask, self.total, other.total)
        return picked


@dataclass
class LayerComm:
    """Exposed TP and CP seconds of one layer per micro-batch (forward + backward + recompute), the
    stage-level TP collectives, and totals per layer."""

    tensor: object
    context: object
    fwd: object        # exposed in the forward pass (TP + CP), for the data-parallel overlap model
    bwd: object        # exposed in the backward pass and the recompute
    first: object      # embedding collectives (first stage)
    last: object       # LM head collectives (last stage)
    total: dict


def _stage(mb: MicroBatchTimes, lc: LayerComm, layers, with_first, with_last, recomputes: int, host: bool) -> StageTime:
    """A stage of `layers` layers; with_first / with_last (0 or 1 arrays): it also runs the embedding /
    the LM head and loss."""
    fwd = layers * mb.layer.fwd + with_first * mb.first.fwd + with_last * mb.last.fwd
    bwd = layers * mb.layer.bwd + with_first * mb.first.bwd + with_last * mb.last.bwd
    rec = layers * mb.layer.rec
    tensor_comm = layers * lc.tensor + with_first * lc.first + with_last * lc.last
    context_comm = layers * lc.context
    # launch cost of one pass over the stage's ops; the backward launches twice as many kernels
    per_pass = (layers * mb.layer.kernels + with_first * mb.first.kernels + with_last * mb.last.kernels) \
        * cost.DISPATCH_S
    if host:   # synchronous: every op pays its launch cost inside the pass that runs it
        fwd, bwd, rec = fwd + per_pass, bwd + 2 * per_pass, rec + recomputes * per_pass
        other = 0.0 * per_pass
    else:      # asynchronous: launch-bound only when kernels are tiny
        other = np.maximum(0.0, (3 + recomputes) * per_pass - (fwd + bwd + rec))
    return StageTime(fwd, bwd, rec, tensor_comm, context_comm, other)


def _layer_comm(c: Categorical, n: Numeric, prec, shape: Shape, mb: MicroBatchTimes, pl: Placement,
                fabric: Fabric) -> LayerComm:
    tp = np.asarray(n.tensor_parallel, dtype=float)
    activation = shape.tokens * np.asarray(n.d_model, dtype=float) * prec.activation_bytes
    sp = c.sequence_parallel
    tpc = tensor.layer_comm(activation_bytes=activation, group=pl.tensor, fabric=fabric, sequence_parallel=sp,
                            overlap=c.tp_comm_overlap, gemms=mb.gemms)
    first, last = tensor.model_level_comm(activation_bytes=activation, group=pl.tensor, fabric=fabric,
                                          sequence_parallel=sp)
    first, last = np.where(tp > 1, first, 0.0), np.where(tp > 1, last, 0.0)
    kv = context.kv_block_bytes(batch=n.micro_batch_size, local_seq_len=shape.local_seq_len,
                                kv_heads_local=np.asarray(n.n_kv_heads) / tp, head_dim=shape.head_dim,
                                act_bytes=prec.activation_bytes)
    cp_fwd, cp_bwd, cp_total = context.ring_attention_exposed(kv_bytes=kv, attention_fwd_s=mb.attention_fwd,
                                                              attention_bwd_s=mb.attention_bwd, group=pl.context,
                                                              fabric=fabric)
    again = 1 + _recompute_share(c)    # recomputing a layer's forward repeats its collectives
    return LayerComm(tensor=again * tpc.fwd_exposed + tpc.bwd_exposed, context=again * cp_fwd + cp_bwd,
                     fwd=tpc.fwd_exposed + cp_fwd, bwd=(again - 1) * (tpc.fwd_exposed + cp_fwd) + tpc.bwd_exposed + cp_bwd,
                     first=first, last=last,
                     total={"tensor": tpc.fwd_total * again + tpc.bwd_total,
                            "context": cp_total * (1 + (again - 1) / 3)})


# ----------------------------------------------------------------------------- per-step extras
def _step_extras(c: Categorical, n: Numeric, prec, local, accum, shard, activations):
    """Per-step work besides the micro-step kernels, as (in the forward passes, in the backward passes,
    optimizer): weight casts and half the page faults in the forward, gradient accumulation and the
    other half in the backward (the forward maps the activations it saves, the backward a gradient
    for each; on 01-base-fp32 the measured split of page faults was 44% / 56%). `local`: parameters
    on this device (its TP shard of its pipeline stage); `shard`: the ranks ZeRO shards over."""
    dev = c.device
    bshare = cost.host_shares(dev, n.devices_per_node)[1]
    states = local / (shard if c.zero_stage >= 1 else 1.0)
    grad_shard = local / (shard if c.zero_stage >= 2 else 1.0)
    if c.implementation == "fused" and c.master_weights == "optimizer":
        # Megatron-LM's gradient-accumulation fusion (--gradient-accumulation-fusion, on by default; TE's
        # fuse_wgrad_accumulation): every weight-gradient GEMM accumulates into the fp32 main_grad buffer in
        # its epilogue (beta = 1), so no separate pass; the buffer is zeroed once per step (zero_grad_buffer)
        accumulate = cost.memory_time(dev, grad_shard * prec.grad_bytes) / bshare
    else:
        # PyTorch autograd: micro-steps after the first add into the held gradients (read, read, write)
        accumulate = (accum - 1) * cost.memory_time(dev, 3 * grad_shard * prec.grad_bytes) / bshare
    # autocast casts the fp32 weights to the compute dtype once per micro-step (read 4 B, write 2 B)
    cast_params = local / (shard if c.zero_stage >= 3 else 1.0)
    casts = accum * cost.memory_time(dev, cast_params * (prec.param_bytes + prec.weight_copy_bytes)) / bshare \
        if prec.weight_copy_bytes else 0.0
    # host devices re-map their activation memory every micro-step (see cost.first_touch_time)
    allocation = accum * cost.first_touch_time(dev, activations)
    per_param = OPTIMIZER_BYTES_PER_PARAM[c.optimizer] + (LOSS_SCALING_BYTES_PER_PARAM if prec.loss_scaling else 0)
    if prec.master_bytes:   # the optimizer updates the fp32 master and writes the model's 16-bit copy
        per_param += prec.param_bytes
    opt_bytes = states * per_param
    optimizer = opt_bytes / (cost.bandwidth(dev, opt_bytes, "optimizer_step") * bshare)
    return casts + allocation / 2, accumulate + allocation / 2, optimizer


# ----------------------------------------------------------------------------- parameters per stage
@dataclass
class StageParams:
    """Parameters held by one device of the first, a middle and the last stage (its TP shard)."""

    first: object
    middle: object
    last: object
    per_layer: object        # one layer's parameters on this device

    @property
    def busiest(self):
        return np.maximum(np.maximum(self.first, self.last), self.middle)


def _stage_params(c: Categorical, n: Numeric, layers: pipeline.StageLayers) -> tuple[object, StageParams]:
    """Whole-model parameters and each stage's TP shard. The first stage holds the embedding, the last the
    final norm and the LM head (with tied embeddings a copy of the embedding, whose gradients the two
    stages all-reduce, as Megatron does)."""
    params = parameter_count(n.n_layers, n.d_model, n.n_heads, n.n_kv_heads, n.d_ff, n.vocab_size, c.mlp, c.tied,
                             n.seq_len, c.positions == "learned")
    per_layer = parameter_count(1, n.d_model, n.n_heads, n.n_kv_heads, n.d_ff, 0, c.mlp, True) - 2 * np.asarray(n.d_model)
    tp = np.asarray(n.tensor_parallel, dtype=float)
    pp = np.asarray(n.pipeline_parallel, dtype=float)
    embed = np.asarray(n.vocab_size, dtype=float) * n.d_model
    first = np.where(pp > 1, layers.first * per_layer + embed, params)
    last = np.where(pp > 1, layers.last * per_layer + embed + 2 * np.asarray(n.d_model), params)
    return params, StageParams(first / tp, layers.middle * per_layer / tp, last / tp, per_layer / tp)


# ----------------------------------------------------------------------------- whole step
def _fp32_weights(c: Categorical) -> bool:
    """The weights the forward computes with are fp32 (autocast casts each matmul's): DDP or one device with
    model-side fp32 weights. FSDP gathers 16-bit weights; optimizer-side masters keep a 16-bit model."""
    return c.master_weights == "model" and c.zero_stage < 3 and c.precision not in ("fp32", "tf32")


def _recompute_share(c: Categorical) -> float:
    """The share of layers whose whole forward (kernels, TP collectives) runs again in the backward."""
    if c.checkpointing == "full":
        return 1.0
    return 1.0 / c.checkpoint_every if (c.checkpointing == "selective" and c.selective == "layers") else 0.0


def _memory_policy(c: Categorical) -> str:
    """memory.activation_bytes_per_layer's name for the checkpointing policy."""
    if c.checkpointing != "selective" or c.selective == "attention":
        return c.checkpointing
    return f"selective-{c.selective}-{c.checkpoint_every}" if c.selective == "layers" else "selective-ops"


def _activation_policy(c: Categorical, prec) -> ActivationPolicy:
    return ActivationPolicy(act_bytes=prec.activation_bytes, attention=c.attention, implementation=c.implementation,
                            mlp=c.mlp, dropout=c.dropout, checkpointing=_memory_policy(c), fp8=c.precision == "fp8",
                            norm=c.norm, positions=c.positions, predicted_fraction=c.predicted_fraction,
                            autocast=_fp32_weights(c))


def _layer_dims(c: Categorical, n: Numeric, shape: Shape) -> LayerDims:
    tp = np.asarray(n.tensor_parallel, dtype=float)
    ff = np.asarray(n.d_ff, dtype=float)
    return LayerDims(tokens=shape.tokens, batch=n.micro_batch_size, seq_len=n.seq_len, d_model=n.d_model,
                     heads=np.asarray(n.n_heads) / tp, kv_heads=np.asarray(n.n_kv_heads) / tp, head_dim=shape.head_dim,
                     d_ff=ff / tp, tensor_parallel=tp, sequence_parallel=c.sequence_parallel)


def _activation_terms(c: Categorical, n: Numeric, prec, shape: Shape, shared: Block | None) -> ActivationTerms:
    """One layer's activations, a re-materialized layer's and the loss's, per distinct shape of `shared`
    (computed once for all calls on the block) when given."""
    act = _activation_policy(c, prec)
    if shared is None or shared.shapes is None:
        vocab = np.asarray(n.vocab_size) / np.asarray(n.tensor_parallel, dtype=float)
        return activation_terms(_layer_dims(c, n, shape), vocab, act, c.cross_entropy)
    key = ("memory", act, c.cross_entropy, c.sequence_parallel)
    if key not in shared.results:
        s = shared.shapes
        tp = np.asarray(s.tensor_parallel, dtype=float)
        dims = _layer_dims(c, s, Shape(s.micro_batch_size, s.seq_len, s.d_model, s.n_heads, s.n_kv_heads, s.d_ff,
                                       s.vocab_size, s.n_layers, tp, np.asarray(s.context_parallel, dtype=float),
                                       c.sequence_parallel))
        shared.results[key] = activation_terms(dims, np.asarray(s.vocab_size) / tp, act, c.cross_entropy)
    return _spread(shared.results[key], shared.inverse, len(shared.shapes.micro_batch_size))


def _memory(c: Categorical, n: Numeric, prec, shape: Shape, sp: StageParams, layers: pipeline.StageLayers,
            m, shard, shared: Block | None = None) -> MemoryBreakdown:
    pp, v = n.pipeline_parallel, n.virtual_pipeline_stages
    act = _activation_policy(c, prec)
    terms = _activation_terms(c, n, prec, shape, shared)
    # gradients exist at the activation peak (the start of backward) when they persist between steps
    # (Megatron's fp32 main_grad buffers) or accumulate over micro-batches; PyTorch optimizers free them
    # at zero_grad (set_to_none=True, the default since torch 2.0)
    grads = np.where((np.asarray(m) > 1) | (c.master_weights == "optimizer"), 1.0, 0.0)
    common = dict(params_per_layer_local=sp.per_layer, dims=None, vocab_local=None,
                  prec=prec, act=act, optimizer=c.optimizer, zero_stage=c.zero_stage, shard_group=shard,
                  cross_entropy=c.cross_entropy, grads_at_peak=grads, host=cost.is_host_device(c.device), terms=terms)
    single = np.asarray(pp) == 1
    first = memory_per_device(stage=StageMemoryInputs(sp.first, layers.first,
                                                      pipeline.in_flight_microbatches(pp, m, v, stage=0),
                                                      np.where(single, 1.0, 0.0)), **common)
    last = memory_per_device(stage=StageMemoryInputs(sp.last, layers.last,
                                                     pipeline.in_flight_microbatches(pp, m, v, stage=np.asarray(pp) - 1),
                                                     1.0), **common)
    return busiest(first, last)


def _data_comm(c: Categorical, n: Numeric, prec, sp: StageParams, layers, stage0: StageTime, mb: MicroBatchTimes,
               lc: LayerComm, pl: Placement, fabric: Fabric, accum):
    """Gradient and weight collectives of the first stage (which finishes the step: its last backward runs
    last), plus the all-reduce of tied embedding gradients between the first and last stage."""
    compute = StepCompute(fwd_layer=mb.layer.fwd + lc.fwd, bwd_layer=mb.layer.bwd + mb.layer.rec + lc.bwd,
                          bwd_micro=stage0.bwd + stage0.rec, fwd_micro=stage0.fwd)
    dpc = data_parallel_comm(zero_stage=c.zero_stage, params_local=sp.first, params_per_layer_local=sp.per_layer,
                             n_layers=layers.first, accum=accum, group=pl.gradient, grad_bytes=prec.grad_bytes,
                             gather_bytes=prec.param_bytes if prec.master_bytes else prec.activation_bytes,
                             fabric=fabric, compute=compute,
                             overlap=not cost.is_host_device(c.device))
    pp = np.asarray(n.pipeline_parallel, dtype=float)
    if not c.tied:
        return dpc.total, dpc.exposed
    crosses = pl.pipeline.crosses_nodes
    pair = Group(size=2.0, per_node=np.where(crosses, 1.0, 2.0), nodes=np.where(crosses, 2.0, 1.0), stride=1.0)
    embed = np.asarray(n.vocab_size, dtype=float) * n.d_model / np.asarray(n.tensor_parallel) * prec.grad_bytes
    tie = np.where(pp > 1, collective_time("all_reduce", embed, pair, fabric), 0.0)
    return dpc.total + tie, dpc.exposed + tie


# The numbers that decide one micro-batch's kernels and its tensor/context-parallel collectives. A sweep or
# a search varies many more (pipeline, data parallel, nodes, ZeRO, batch) than these: the per-layer work is
# computed once per distinct shape and spread over the rows (`_per_shape`).
SHAPE_KEYS = ("micro_batch_size", "seq_len", "d_model", "n_heads", "n_kv_heads", "d_ff", "vocab_size",
              "tensor_parallel", "context_parallel", "devices_per_node", "inter_node_links")


def _micro_batch_and_layer_comm(c: Categorical, n: Numeric, prec) -> tuple:
    dev = c.device
    tp, cp = np.asarray(n.tensor_parallel, dtype=float), np.asarray(n.context_parallel, dtype=float)
    shape = Shape(n.micro_batch_size, n.seq_len, n.d_model, n.n_heads, n.n_kv_heads, n.d_ff, n.vocab_size,
                  n.n_layers, tp, cp, c.sequence_parallel)
    cshare, bshare = cost.host_shares(dev, n.devices_per_node)
    mb = micro_batch_times(shape=shape, prec=prec, device=dev, mlp=c.mlp, causal=c.causal, attention=c.attention,
                           checkpointing=c.checkpointing, selective=c.selective, checkpoint_every=c.checkpoint_every,
                           cross_entropy=c.cross_entropy, fp8_recipe=c.fp8_recipe,
                           attention_kernel=c.attention_kernel, compute_share=cshare,
                           kernels=Kernels(c.implementation, c.norm, c.positions, c.dropout, c.predicted_fraction,
                                           _fp32_weights(c)),
                           bandwidth_share=bshare)
    pl = place(tp, cp, 1.0, 1.0, n.devices_per_node)
    fabric = Fabric(dev, c.intra_node, c.inter_node, n.inter_node_links, n.devices_per_node)
    return mb, _layer_comm(c, n, prec, shape, mb, pl, fabric), (pl.tensor, pl.context)


def _distinct_shapes(n: Numeric):
    """(the distinct rows of SHAPE_KEYS as a Numeric, the index of each row's shape), or None when the
    rows are few or nearly all distinct."""
    cols = {k: np.asarray(getattr(n, k), dtype=float) for k in SHAPE_KEYS}
    size = max(c.size for c in cols.values())
    if size < 64:
        return None
    code, space = np.zeros(size, dtype=np.int64), 1
    for col in cols.values():     # mixed-radix code of the varying columns (constant ones add nothing)
        if col.ndim == 0 or col.size == 1 or (col == col[0]).all():
            continue
        index, count = _factorize(col)
        code, space = code * count + index, space * count
    first, inverse = _first_and_inverse(code, space)
    if len(first) > size // 4:
        return None
    fields = {f.name: getattr(n, f.name) for f in dataclasses.fields(n)}
    for key, col in cols.items():
        fields[key] = np.broadcast_to(col, (size,))[first]
    return type(n)(**fields), inverse


def _factorize(col: np.ndarray) -> tuple[np.ndarray, int]:
    """(an index per value, the number of indices): small non-negative integers index themselves, other
    values their rank among the distinct values."""
    top = col.max()
    if col.min() >= 0 and top < 65536 and (col == np.floor(col)).all():
        return col.astype(np.int64), int(top) + 1
    values, index = np.unique(col, return_inverse=True)
    return index.reshape(col.shape), len(values)


def _first_and_inverse(code: np.ndarray, space: int) -> tuple[np.ndarray, np.ndarray]:
    """(a row of each distinct code, each row's distinct-code number), by a table when the codes are few,
    else by sorting. Any row of a code will do: its rows share every shape value."""
    if space > 4 * code.size + 1024:
        return np.unique(code, return_index=True, return_inverse=True)[1:]
    row_of = np.full(space, -1, dtype=np.int64)
    row_of[code] = np.arange(code.size)
    present = row_of >= 0
    number = np.cumsum(present) - 1
    return row_of[present], number[code]


def _spread(obj, inverse, count: int):
    """A dataclass of per-shape arrays (`count` shapes), indexed back to one value per row; what does not
    vary by shape (scalars, one-element arrays) stays as it is and broadcasts."""
    if isinstance(obj, dict):
        return {k: _spread(v, inverse, count) for k, v in obj.items()}
    if dataclasses.is_dataclass(obj):
        return type(obj)(**{f.name: _spread(getattr(obj, f.name), inverse, count)
                            for f in dataclasses.fields(obj)})
    if isinstance(obj, np.ndarray) and obj.ndim == 1 and len(obj) == count:
        return np.take(obj, inverse)      # several times faster than obj[inverse] for unsorted indices
    return obj


@dataclass
class Block:
    """A block of rows that several simulate calls share (a search simulates one block for every
    combination of its non-numeric choices): its distinct micro-batch shapes, each row's shape, and the
    per-shape results already computed, by the categorical values they depend on. `rows(index)`: the
    same block seen from some of its rows."""

    shapes: Numeric | None          # the distinct shapes (None: too few rows, or nearly all distinct)
    inverse: np.ndarray | None      # each row's shape
    results: dict = field(default_factory=dict)

    def rows(self, index) -> "Block":
        """`index`: the rows' positions in the block (sorted)."""
        return Block(self.shapes, None if self.inverse is None else np.take(self.inverse, index), self.results)


def block(n: Numeric) -> Block:
    """The Block of the rows of `n`."""
    distinct = _distinct_shapes(n)
    return Block(None, None) if distinct is None else Block(*distinct)


def _shape_key(c: Categorical) -> tuple:
    """What per-shape results depend on: every categorical value but the ZeRO stage, which only decides
    whether the weights are fp32 while they compute. Hardware by identity (the objects are kept with the
    results, so an identity is not reused while they live)."""
    values = tuple(id(v) if isinstance(v, (Device, Interconnect)) else v
                   for k, v in vars(c).items() if k != "zero_stage")
    return values + (_fp32_weights(c),)


def _per_shape(c: Categorical, n: Numeric, prec, shared: Block | None = None) -> tuple:
    """micro_batch_times, the layer's TP/CP communication and the (tensor, context) groups, once per
    distinct shape (of `shared`, computed once for all calls on that block, when given)."""
    if shared is None:
        distinct = _distinct_shapes(n)
        if distinct is None:
            return _micro_batch_and_layer_comm(c, n, prec)
        shapes, inverse = distinct
        found = _micro_batch_and_layer_comm(c, shapes, prec)
    elif shared.shapes is None:
        return _micro_batch_and_layer_comm(c, n, prec)
    else:
        shapes, inverse, key = shared.shapes, shared.inverse, _shape_key(c)
        if key not in shared.results:
            shared.results[key] = (_micro_batch_and_layer_comm(c, shapes, prec), (c.device, c.intra_node, c.inter_node))
        found = shared.results[key][0]
    mb, lc, groups = found
    count = len(shapes.micro_batch_size)
    return _spread(mb, inverse, count), _spread(lc, inverse, count), tuple(_spread(g, inverse, count) for g in groups)


@dataclass
class MemoryPart:
    """What simulate computes before any timing: layers and parameters per stage, memory per device."""

    layers: pipeline.StageLayers
    params: object
    stage_params: StageParams
    memory: MemoryBreakdown

    def rows(self, index, count: int) -> "MemoryPart":
        """The rows at `index` of the `count` rows this part was computed for."""
        return _spread(self, index, count)


def memory_part(c: Categorical, n: Numeric, shared: Block | None = None) -> MemoryPart:
    """simulate's memory (`.memory.total` is memory_per_device_bytes) before its timing: a search drops the
    layouts that cannot fit and times the rest, handing simulate this part (`rows(...)` of it).
    `shared`: as simulate's."""
    prec = policy(c.precision, c.master_weights)
    tp, cp, pp, dp, m = (np.asarray(x, dtype=float) for x in (
        n.tensor_parallel, n.context_parallel, n.pipeline_parallel, n.data_parallel, n.grad_accum_steps))
    shape = Shape(n.micro_batch_size, n.seq_len, n.d_model, n.n_heads, n.n_kv_heads, n.d_ff, n.vocab_size,
                  n.n_layers, tp, cp, c.sequence_parallel)
    layers = pipeline.stage_layers(n.n_layers, pp)
    params, sp = _stage_params(c, n, layers)
    return MemoryPart(layers, params, sp, _memory(c, n, prec, shape, sp, layers, m, dp * cp, shared))


def simulate(c: Categorical, n: Numeric, shared: Block | None = None,
             memory: MemoryPart | None = None) -> dict[str, np.ndarray]:
    """Vectorized step simulation; returns arrays keyed like the Prediction fields. `shared`: the rows'
    Block (`block(...).rows(index)`), whose per-shape results other calls on the block reuse; `memory`:
    memory_part(c, n, ...) when the caller computed it already."""
    prec = policy(c.precision, c.master_weights)
    dev = c.device
    tp, cp, pp, v, dp, m = (np.asarray(x, dtype=float) for x in (
        n.tensor_parallel, n.context_parallel, n.pipeline_parallel, n.virtual_pipeline_stages, n.data_parallel,
        n.grad_accum_steps))
    shape = Shape(n.micro_batch_size, n.seq_len, n.d_model, n.n_heads, n.n_kv_heads, n.d_ff, n.vocab_size,
                  n.n_layers, tp, cp, c.sequence_parallel)
    fabric = Fabric(dev, c.intra_node, c.inter_node, n.inter_node_links, n.devices_per_node)
    mb, lc, (tensor_group, context_group) = _per_shape(c, n, prec, shared)
    pl = place(tp, cp, dp, pp, n.devices_per_node, tensor=tensor_group, context=context_group)
    if memory is None:
        memory = memory_part(c, n, shared)
    layers, params, sp, mem = memory.layers, memory.params, memory.stage_params, memory.memory
    host, recomputes = cost.is_host_device(dev), _recompute_share(c)
    single = pp == 1
    first = _stage(mb, lc, layers.first, 1.0, np.where(single, 1.0, 0.0), recomputes, host)
    last = _stage(mb, lc, layers.last, np.where(single, 1.0, 0.0), 1.0, recomputes, host)
    middle = _stage(mb, lc, layers.middle, 0.0, 0.0, recomputes, host)
    slowest = first.pick(first.total >= last.total, last)
    slowest = slowest.pick((slowest.total >= middle.total) | (pp <= 2), middle)
    per_layer = mb.layer.fwd + mb.layer.bwd + mb.layer.rec + lc.tensor + lc.context
    inner = np.maximum(np.asarray(n.n_layers, dtype=float) - layers.first - layers.last, 0.0)
    stage_sum = np.where(single, first.total, first.total + last.total + inner * per_layer)
    schedule = pipeline.schedule_time(stage_times=slowest.total, stage_sum=stage_sum, microbatches=m,
                                      virtual_stages=v)
    bubble = schedule - m * slowest.total
    send = pipeline.p2p_bytes(batch=n.micro_batch_size, local_seq_len=shape.local_seq_len, d_model=n.d_model,
                              act_bytes=prec.activation_bytes, tensor_parallel=tp)
    p2p_exposed, p2p_total = pipeline.p2p_exposed(send_s=p2p_time(send, pl.pipeline.crosses_nodes, fabric), pp=pp,
                                                  microbatches=m, virtual_stages=v)
    shard = dp * cp
    fwd_extra, bwd_extra, optimizer = _step_extras(c, n, prec, sp.busiest, m, shard, mem.activations)
    dp_total, dp_exposed = _data_comm(c, n, prec, sp, layers, first, mb, lc, pl, fabric, m)
    layer_tp_cp = m * np.asarray(layers.first, dtype=float)   # per-kind totals are for the first stage
    comm_total = layer_tp_cp * (lc.total["tensor"] + lc.total["context"]) + p2p_total + dp_total
    comm_exposed = m * slowest.comm + p2p_exposed + dp_exposed
    # a fitted overlap below 1: that share of what the model hides does not hide (params.py)
    unhidden = (1.0 - fitted(dev, "overlap")) * np.maximum(comm_total - comm_exposed, 0.0)
    comm_exposed = comm_exposed + unhidden
    step = schedule + fwd_extra + bwd_extra + optimizer + p2p_exposed + dp_exposed + unhidden
    devices = np.asarray(n.devices_per_node, dtype=float) * np.asarray(n.nodes, dtype=float)
    gbs = np.asarray(n.global_batch_size, dtype=float)
    model_flops = (np.asarray(n.n_layers, dtype=float) * mb.layer_flops + mb.top_flops) * m * devices / pp
    tokens_per_step = gbs * n.seq_len
    # whole optimizer steps per epoch; the last partial batch is dropped (drop_last), as GPT-NeoX counts
    iters = np.floor(np.asarray(n.tokens_per_epoch, dtype=float) / tokens_per_step)
    return {
        "step_time_s": step,
        "forward": m * slowest.fwd + fwd_extra, "backward": m * slowest.bwd + bwd_extra, "recompute": m * slowest.rec,
        "optimizer": optimizer, "pipeline_bubble": bubble, "communication_exposed": comm_exposed,
        "communication_total": comm_total,
        "other": m * slowest.other,
        "comm_tensor_exposed": m * slowest.tensor, "comm_tensor_total": layer_tp_cp * lc.total["tensor"],
        "comm_context_exposed": m * slowest.context, "comm_context_total": layer_tp_cp * lc.total["context"],
        "comm_pipeline_exposed": p2p_exposed,
        "comm_pipeline_total": p2p_total, "comm_data_exposed": dp_exposed, "comm_data_total": dp_total,
        "samples_per_s": gbs / step, "tokens_per_s": tokens_per_step / step,
        "iterations_per_epoch": iters, "epoch_time_s": iters * step, "total_time_s": iters * step * n.epochs,
        "mfu": model_flops / (step * devices * (dev.peak(prec.gemm_dtype) or np.nan)),
        "memory_per_device_bytes": mem.total, "fits_in_memory": mem.total <= dev.memory_bytes,
        "parameters": params, "model_flop_per_step": model_flops, "memory": mem,
        "devices": devices, "placement": pl, "stage_layers": layers, "stage_time_s": slowest.total,
        "in_flight": pipeline.in_flight_microbatches(pp, m, v, stage=0),
    }


# ----------------------------------------------------------------------------- one plan
def categorical(plan) -> Categorical:
    m, t, p = plan.model, plan.training, plan.parallelism
    return Categorical(plan.device, plan.intra_node, plan.inter_node, t.precision, t.optimizer,
                       t.activation_checkpointing, m.attention, m.mlp, m.causal, m.tied_embeddings, p.zero_stage,
                       p.sequence_parallel, p.tp_comm_overlap, t.selective_checkpointing, t.checkpoint_every_n_layers,
                       t.master_weights, t.cross_entropy, m.kernels, m.dropout > 0, t.fp8_recipe, m.attention_kernel,
                       m.norm, m.positions, m.predicted_fraction)


def numeric(plan) -> Numeric:
    m, t, p, h = plan.model, plan.training, plan.parallelism, plan.hw
    tokens = plan.tokens_per_epoch
    return Numeric(n_layers=m.n_layers, d_model=m.d_model, n_heads=m.n_heads, n_kv_heads=m.n_kv_heads,
                   d_ff=m.d_ff, vocab_size=m.vocab_size, seq_len=m.seq_len, global_batch_size=t.global_batch_size,
                   micro_batch_size=t.micro_batch_size, grad_accum_steps=t.grad_accum_steps,
                   data_parallel=p.data_parallel, tensor_parallel=p.tensor_parallel,
                   devices_per_node=h.devices_per_node, nodes=h.nodes, inter_node_links=h.inter_node_links,
                   tokens_per_epoch=np.nan if tokens is None else tokens,
                   epochs=plan.spec.data.epochs if plan.spec.data else 1.0,
                   pipeline_parallel=p.pipeline_parallel, virtual_pipeline_stages=p.virtual_pipeline_stages,
                   context_parallel=p.context_parallel)


def _f(x) -> float:
    return float(np.asarray(x))


def _placement_notes(plan, r) -> list[str]:
    from simkit.model.comm.topology import describe

    pl: Placement = r["placement"]
    dpn, p = plan.hw.devices_per_node, plan.parallelism
    link = plan.inter_node.name if plan.inter_node is not None else "the measured inter-node fit"
    notes = []
    for name, g, on in (("tensor-parallel", pl.tensor, p.tensor_parallel > 1),
                        ("context-parallel", pl.context, p.context_parallel > 1),
                        ("data-parallel (gradient)", pl.gradient, p.data_parallel * p.context_parallel > 1),
                        ("pipeline", pl.pipeline, p.pipeline_parallel > 1)):
        text = describe(name, g, dpn) if on else None
        if text:
            notes.append(text.replace("the inter-node links", f"the inter-node links ({link})"))
    return notes


def _pipeline_info(plan, r) -> dict:
    p, t = plan.parallelism, plan.training
    if p.pipeline_parallel == 1:
        return {}
    layers = r["stage_layers"]
    return {"stages": p.pipeline_parallel, "virtual_stages": p.virtual_pipeline_stages,
            "microbatches": t.grad_accum_steps,
            "layers_first_stage": int(_f(layers.first)), "layers_middle_stage": int(_f(layers.middle)),
            "layers_last_stage": int(_f(layers.last)),
            "bubble_fraction_ideal": _f(pipeline.bubble_fraction(p.pipeline_parallel, t.grad_accum_steps,
                                                                 p.virtual_pipeline_stages)),
            "in_flight_microbatches_first_stage": _f(r["in_flight"])}


def predict(plan) -> Prediction:
    """Predict one validated plan (simkit.plan.Plan)."""
    from simkit.model.uncertainty import coverage as interval_coverage, step_interval

    r = simulate(categorical(plan), numeric(plan))
    step = _f(r["step_time_s"])
    breakdown = {k: _f(r[k]) for k in BREAKDOWN_KEYS}
    mem: MemoryBreakdown = r["memory"]
    capacity = plan.device.memory_bytes
    total_mem = _f(r["memory_per_device_bytes"])
    warnings = []
    if total_mem > capacity:
        warnings.append(f"does not fit: needs {total_mem / 2**30:.1f} GiB per device, the device has "
                        f"{capacity / 2**30:.1f} GiB ({(total_mem - capacity) / 2**30:.1f} GiB over)")
    iters = _f(r["iterations_per_epoch"])
    has_data = math.isfinite(iters)
    total = _f(r["total_time_s"]) if has_data else None
    devices = _f(r["devices"])
    device_hours = total * devices / 3600 if total is not None else None
    price = plan.device.price_per_hour_usd
    comm = {kind: {"exposed": _f(r.get(f"comm_{kind}_exposed", 0.0)), "total": _f(r[f"comm_{kind}_total"])}
            for kind in COMM_KINDS}
    return Prediction(
        step_time_s=step, step_time_interval_s=step_interval(plan, step, breakdown),
        step_time_interval_coverage=interval_coverage(),
        samples_per_s=_f(r["samples_per_s"]), tokens_per_s=_f(r["tokens_per_s"]),
        iterations_per_epoch=int(iters) if has_data else None,
        epoch_time_s=_f(r["epoch_time_s"]) if has_data else None, total_time_s=total,
        mfu=_f(r["mfu"]), memory_per_device_bytes=total_mem, memory_allocated_peak_bytes=_f(mem.allocated),
        memory_reserved_peak_bytes=_f(mem.reserved), memory_context_bytes=_f(mem.context),
        memory_breakdown_bytes={k: _f(v) for k, v in mem.as_dict().items()}, memory_capacity_bytes=capacity,
        fits_in_memory=bool(total_mem <= capacity), breakdown_s=breakdown, parameters=_f(r["parameters"]),
        model_flop_per_step=_f(r["model_flop_per_step"]), device_hours=device_hours,
        cost_usd=device_hours * price if (device_hours is not None and price) else None,
        communication_s=comm, pipeline=_pipeline_info(plan, r), placement=_placement_notes(plan, r),
        warnings=warnings, assumptions=list(getattr(plan, "assumptions", ())))
