"""predict(): composes workload, cost, memory and parallelism models into a Prediction.

The core (`simulate`) works on numpy arrays so that `simkit sweep` evaluates thousands of
configurations in one call; `predict` runs it on one plan. Pure: no I/O, no printing.

Step time = grad_accum_steps x (forward + backward + recompute of one micro-batch)
          + gradient accumulation and cast work + optimizer step + exposed communication.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from simkit.model import cost
from simkit.model.comm.collectives import Fabric
from simkit.hardware import Device, Interconnect
from simkit.model.memory import MemoryBreakdown, memory_per_device
from simkit.model.parallel.data import CommTimes, StepCompute, data_parallel_comm
from simkit.model.parallel.tensor import tensor_parallel_comm
from simkit.model.precision import policy
from simkit.model.workload import Shape, StepWorkload, parameter_count, transformer_ops

# Bytes moved per parameter by one optimizer step (fp32 params, grads and states, multi-tensor
# kernels): AdamW reads p, g, m, v and writes p, m, v (7 x 4 B); LAMB adds a second pass for the
# trust ratio (read p and the update, write p: 3 x 4 B) (You et al. 2020, Algorithm 2); SGD with
# momentum reads p, g, m and writes p, m (5 x 4 B).
OPTIMIZER_BYTES_PER_PARAM = {"adamw": 28, "adam": 28, "lamb": 40, "sgd": 20}
LOSS_SCALING_BYTES_PER_PARAM = 8   # fp16 GradScaler: unscale (read+write) and the inf/nan check

BREAKDOWN_KEYS = ("forward", "backward", "recompute", "optimizer", "communication_exposed",
                  "communication_total", "other")


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


@dataclass
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


@dataclass
class Prediction:
    step_time_s: float
    step_time_interval_s: tuple[float, float]
    samples_per_s: float
    tokens_per_s: float
    iterations_per_epoch: float | None
    epoch_time_s: float | None
    total_time_s: float | None
    mfu: float
    memory_per_device_bytes: float
    memory_breakdown_bytes: dict[str, float]
    memory_capacity_bytes: float
    fits_in_memory: bool
    breakdown_s: dict[str, float]
    parameters: float
    model_flop_per_step: float
    device_hours: float | None = None
    cost_usd: float | None = None
    warnings: list[str] = field(default_factory=list)
    assumptions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        from dataclasses import asdict

        out = asdict(self)
        out["step_time_interval_s"] = list(self.step_time_interval_s)
        return out


# ----------------------------------------------------------------------------- compute
def _gemm_times(w: StepWorkload, dev: Device, dtype: str, ebytes: int, per_layer: bool):
    fwd = bwd = 0.0
    for g in (g for g in w.gemms if g.per_layer == per_layer):
        fwd = fwd + cost.gemm_time(dev, dtype, g.m, g.n, g.k, g.batch, ebytes)
        # input gradient (m x k = (m x n) @ (n x k)) and weight gradient (k x n = (k x m) @ (m x n))
        bwd = bwd + cost.gemm_time(dev, dtype, g.m, g.k, g.n, g.batch, ebytes)
        bwd = bwd + cost.gemm_time(dev, dtype, g.k, g.n, g.m, g.batch, ebytes)
    return fwd, bwd


def _memory_times(w: StepWorkload, dev: Device, per_layer: bool):
    fwd = bwd = 0.0
    for op in (o for o in w.memory_ops if o.per_layer == per_layer):
        t = cost.memory_time(dev, op.bytes_fwd, op.pattern)
        fwd, bwd = fwd + t, bwd + op.bwd_factor * t
    return fwd, bwd


def _kernel_count(w: StepWorkload, per_layer: bool) -> int:
    n = sum(1 for g in w.gemms if g.per_layer == per_layer)
    n += sum(o.kernels for o in w.memory_ops if o.per_layer == per_layer)
    if per_layer and w.attention is not None:
        n += 1
    return n


def _selective_recompute(w: StepWorkload, dev: Device, dtype: str, ebytes: int):
    t = 0.0
    for g in (g for g in w.gemms if g.name in w.selective_recompute):
        t = t + cost.gemm_time(dev, dtype, g.m, g.n, g.k, g.batch, ebytes)
    for op in (o for o in w.memory_ops if o.name in w.selective_recompute):
        t = t + cost.memory_time(dev, op.bytes_fwd, op.pattern)
    return t


def _micro_step(c: Categorical, n: Numeric, shape: Shape):
    """Forward, backward and recompute time of one micro-batch on one device."""
    prec = policy(c.precision)
    dev, dtype, eb = c.device, prec.gemm_dtype, prec.activation_bytes
    w = transformer_ops(shape, mlp=c.mlp, causal=c.causal, attention=c.attention, prec=prec)
    g_fwd, g_bwd = _gemm_times(w, dev, dtype, eb, per_layer=True)
    m_fwd, m_bwd = _memory_times(w, dev, per_layer=True)
    a_fwd = a_bwd = 0.0
    if w.attention is not None:
        rate_f, rate_b = cost.attention_rates(dev, dtype, shape.seq_len, shape.head_dim)
        a_fwd = w.attention.flops_fwd / rate_f + cost.memory_time(dev, w.attention.bytes_fwd)
        a_bwd = w.attention.bwd_flop_factor * w.attention.flops_fwd / rate_b + \
            cost.memory_time(dev, 2 * w.attention.bytes_fwd)
    cshare, bshare = cost.host_shares(dev, n.devices_per_node)
    g_fwd, g_bwd, a_fwd, a_bwd = g_fwd / cshare, g_bwd / cshare, a_fwd / cshare, a_bwd / cshare
    m_fwd, m_bwd = m_fwd / bshare, m_bwd / bshare
    layer_fwd = g_fwd + m_fwd + a_fwd
    layer_bwd = g_bwd + m_bwd + a_bwd
    if c.checkpointing == "full":
        layer_rec = layer_fwd
    elif c.checkpointing == "selective":
        layer_rec = _selective_recompute(w, dev, dtype, eb) / cshare
    else:
        layer_rec = 0.0 * layer_fwd
    top_g_fwd, top_g_bwd = _gemm_times(w, dev, dtype, eb, per_layer=False)
    top_m_fwd, top_m_bwd = _memory_times(w, dev, per_layer=False)
    top_g_fwd, top_g_bwd = top_g_fwd / cshare, top_g_bwd / cshare
    top_m_fwd, top_m_bwd = top_m_fwd / bshare, top_m_bwd / bshare
    recomputes = 1 if c.checkpointing == "full" else 0
    # launch cost of one pass over every op; the backward launches twice as many kernels
    per_pass = (n.n_layers * _kernel_count(w, True) + _kernel_count(w, False)) * cost.DISPATCH_S
    fwd = n.n_layers * layer_fwd + top_g_fwd + top_m_fwd
    bwd = n.n_layers * layer_bwd + top_g_bwd + top_m_bwd
    rec = n.n_layers * layer_rec
    if cost.is_host_device(dev):
        # synchronous: every op pays its launch cost inside the pass that runs it
        fwd, bwd, rec = fwd + per_pass, bwd + 2 * per_pass, rec + recomputes * per_pass
        other = 0.0 * per_pass
    else:   # asynchronous: launch-bound only when kernels are tiny
        other = np.maximum(0.0, (3 + recomputes) * per_pass - (fwd + bwd + rec))
    model_flops = 3.0 * sum(g.flops * (n.n_layers if g.per_layer else 1) for g in w.gemms)
    if w.attention is not None:
        model_flops = model_flops + 3.0 * n.n_layers * w.attention.flops_fwd   # backward = 2x forward by convention
    return fwd, bwd, rec, other, StepCompute(layer_fwd, layer_bwd + layer_rec, bwd + rec), model_flops


# ----------------------------------------------------------------------------- whole step
def _step_extras(c: Categorical, n: Numeric, prec, local, accum, dp, activations):
    """Per-step work besides the micro-step kernels, as (in the forward passes, in the backward passes,
    optimizer): weight casts and half the page faults in the forward, gradient accumulation and the
    other half in the backward (the forward maps the activations it saves, the backward a gradient
    for each; on 01-base-fp32 the measured split of page faults was 44% / 56%)."""
    dev = c.device
    bshare = cost.host_shares(dev, n.devices_per_node)[1]
    shard = local / (dp if c.zero_stage >= 1 else 1.0)
    grad_shard = local / (dp if c.zero_stage >= 2 else 1.0)
    # gradient accumulation: micro-steps after the first add into the held gradients (read, read, write)
    accumulate = (accum - 1) * cost.memory_time(dev, 3 * grad_shard * prec.grad_bytes) / bshare
    # autocast casts the fp32 weights to the compute dtype once per micro-step (read 4 B, write 2 B)
    cast_params = local / (dp if c.zero_stage >= 3 else 1.0)
    casts = accum * cost.memory_time(dev, cast_params * (prec.param_bytes + prec.weight_copy_bytes)) / bshare \
        if prec.weight_copy_bytes else 0.0
    # host devices re-map their activation memory every micro-step (see cost.first_touch_time)
    allocation = accum * cost.first_touch_time(dev, activations)
    per_param = OPTIMIZER_BYTES_PER_PARAM[c.optimizer] + (LOSS_SCALING_BYTES_PER_PARAM if prec.loss_scaling else 0)
    opt_bytes = shard * per_param
    optimizer = opt_bytes / (cost.bandwidth(dev, opt_bytes, "optimizer_step") * bshare)
    return casts + allocation / 2, accumulate + allocation / 2, optimizer


def _communication(c: Categorical, n: Numeric, prec, shape: Shape, local, per_layer, accum, dp, tp,
                   step_compute: StepCompute) -> CommTimes:
    dev = c.device
    fabric = Fabric(np.asarray(n.devices_per_node) / tp, n.nodes, c.intra_node, c.inter_node, n.inter_node_links, dev)
    dpc = data_parallel_comm(zero_stage=c.zero_stage, params_local=local, params_per_layer_local=per_layer / tp,
                             n_layers=n.n_layers, accum=accum, dp=dp, grad_bytes=prec.grad_bytes,
                             gather_bytes=prec.activation_bytes, fabric=fabric, compute=step_compute,
                             overlap=not cost.is_host_device(dev))
    tp_fabric = Fabric(tp, 1, c.intra_node, None, 1, dev)
    tpc = tensor_parallel_comm(tokens=shape.tokens, d_model=n.d_model, n_layers=n.n_layers, accum=accum, tp=tp,
                               act_bytes=prec.activation_bytes, fabric=tp_fabric)
    return CommTimes(dpc.total + tpc.total, dpc.exposed + tpc.exposed)


def _memory(c: Categorical, n: Numeric, prec, shape: Shape, params, per_layer, dp, tp) -> MemoryBreakdown:
    return memory_per_device(params=params, params_per_layer=per_layer, n_layers=n.n_layers, tokens=shape.tokens,
                             d_model=n.d_model, n_heads_local=np.asarray(n.n_heads) / tp, seq_len=n.seq_len,
                             batch=n.micro_batch_size, vocab_local=np.asarray(n.vocab_size) / tp, prec=prec,
                             optimizer=c.optimizer, zero_stage=c.zero_stage, data_parallel=dp, tensor_parallel=tp,
                             attention=c.attention, checkpointing=c.checkpointing,
                             host=cost.is_host_device(c.device))


def simulate(c: Categorical, n: Numeric) -> dict[str, np.ndarray]:
    """Vectorized step simulation; returns arrays keyed like the Prediction fields."""
    prec = policy(c.precision)
    dev = c.device
    tp = np.asarray(n.tensor_parallel, dtype=float)
    accum = np.asarray(n.grad_accum_steps, dtype=float)
    dp = np.asarray(n.data_parallel, dtype=float)
    shape = Shape(n.micro_batch_size, n.seq_len, n.d_model, n.n_heads, n.n_kv_heads, n.d_ff, n.vocab_size,
                  n.n_layers, tp)
    params = parameter_count(n.n_layers, n.d_model, n.n_heads, n.n_kv_heads, n.d_ff, n.vocab_size, c.mlp, c.tied)
    per_layer = parameter_count(1, n.d_model, n.n_heads, n.n_kv_heads, n.d_ff, 0, c.mlp, True) - 2 * n.d_model
    fwd, bwd, rec, other, step_compute, model_flops = _micro_step(c, n, shape)
    mem = _memory(c, n, prec, shape, params, per_layer, dp, tp)
    fwd_extra, bwd_extra, optimizer = _step_extras(c, n, prec, params / tp, accum, dp, mem.activations)
    comm = _communication(c, n, prec, shape, params / tp, per_layer, accum, dp, tp, step_compute)
    step = accum * (fwd + bwd + rec + other) + fwd_extra + bwd_extra + optimizer + comm.exposed
    devices = np.asarray(n.devices_per_node, dtype=float) * np.asarray(n.nodes, dtype=float)
    gbs = np.asarray(n.global_batch_size, dtype=float)
    flop_per_step = model_flops * accum * devices
    tokens_per_step = gbs * n.seq_len
    # whole optimizer steps per epoch; the last partial batch is dropped (drop_last), as GPT-NeoX counts
    iters = np.floor(np.asarray(n.tokens_per_epoch, dtype=float) / tokens_per_step)
    return {
        "step_time_s": step,
        "forward": accum * fwd + fwd_extra, "backward": accum * bwd + bwd_extra, "recompute": accum * rec,
        "optimizer": optimizer, "communication_exposed": comm.exposed, "communication_total": comm.total,
        "other": accum * other,
        "samples_per_s": gbs / step, "tokens_per_s": tokens_per_step / step,
        "iterations_per_epoch": iters, "epoch_time_s": iters * step, "total_time_s": iters * step * n.epochs,
        "mfu": flop_per_step / (step * devices * (dev.peak(prec.gemm_dtype) or np.nan)),
        "memory_per_device_bytes": mem.total, "fits_in_memory": mem.total <= dev.memory_bytes,
        "parameters": params, "model_flop_per_step": flop_per_step, "memory": mem,
        "devices": devices,
    }


# ----------------------------------------------------------------------------- one plan
def _categorical(plan) -> Categorical:
    m, t, p = plan.model, plan.training, plan.parallelism
    return Categorical(plan.device, plan.intra_node, plan.inter_node, t.precision, t.optimizer,
                       t.activation_checkpointing, m.attention, m.mlp, m.causal, m.tied_embeddings, p.zero_stage)


def _numeric(plan) -> Numeric:
    m, t, p, h = plan.model, plan.training, plan.parallelism, plan.hw
    tokens = plan.tokens_per_epoch
    return Numeric(m.n_layers, m.d_model, m.n_heads, m.n_kv_heads, m.d_ff, m.vocab_size, m.seq_len,
                   t.global_batch_size, t.micro_batch_size, t.grad_accum_steps, p.data_parallel, p.tensor_parallel,
                   h.devices_per_node, h.nodes, h.inter_node_links, np.nan if tokens is None else tokens,
                   plan.spec.data.epochs if plan.spec.data else 1.0)


def _f(x) -> float:
    return float(np.asarray(x))


def predict(plan) -> Prediction:
    """Predict one validated plan (simkit.plan.Plan)."""
    from simkit.model.uncertainty import step_interval

    c, n = _categorical(plan), _numeric(plan)
    r = simulate(c, n)
    step = _f(r["step_time_s"])
    breakdown = {k: _f(r[k]) for k in BREAKDOWN_KEYS}
    mem: MemoryBreakdown = r["memory"]
    capacity = plan.device.memory_bytes
    total_mem = _f(r["memory_per_device_bytes"])
    warnings = []
    if total_mem > capacity:
        warnings.append(f"does not fit: needs {total_mem / 2**30:.1f} GiB per device, the device has "
                        f"{capacity / 2**30:.1f} GiB ({(total_mem - capacity) / 2**30:.1f} GiB over)")
    if plan.parallelism.pipeline_parallel > 1:
        warnings.append("pipeline_parallel > 1 is not modelled yet: the prediction ignores pipeline bubbles "
                        "and stage communication")
    iters = _f(r["iterations_per_epoch"])
    has_data = math.isfinite(iters)
    total = _f(r["total_time_s"]) if has_data else None
    devices = _f(r["devices"])
    device_hours = total * devices / 3600 if total is not None else None
    price = plan.device.price_per_hour_usd
    return Prediction(
        step_time_s=step, step_time_interval_s=step_interval(plan, step, breakdown),
        samples_per_s=_f(r["samples_per_s"]), tokens_per_s=_f(r["tokens_per_s"]),
        iterations_per_epoch=iters if has_data else None,
        epoch_time_s=_f(r["epoch_time_s"]) if has_data else None, total_time_s=total,
        mfu=_f(r["mfu"]), memory_per_device_bytes=total_mem,
        memory_breakdown_bytes={k: _f(v) for k, v in mem.as_dict().items()}, memory_capacity_bytes=capacity,
        fits_in_memory=bool(total_mem <= capacity), breakdown_s=breakdown, parameters=_f(r["parameters"]),
        model_flop_per_step=_f(r["model_flop_per_step"]), device_hours=device_hours,
        cost_usd=device_hours * price if (device_hours is not None and price) else None, warnings=warnings)
