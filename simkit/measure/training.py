"""Real PyTorch training of a plan's model, timed step by step (the measuring half of `simkit validate`).

The model is a plain pre-LN transformer built from the plan's numbers (or, with `implementation: hf` in
the config, the Hugging Face class of simkit.measure.hf_models); it trains on synthetic random tokens. One process measures in-process (`measure(config)`); data-parallel runs start this module
under torchrun (`python -m torch.distributed.run ... -m simkit.measure.training --config C --out O`)
and rank 0 writes the result as JSON.

Simplifications (they change no GEMM shape): no positional encoding, no dropout, no biases in the
linear layers, LayerNorm for both MLP kinds.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import resource
import socket
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from simkit.measure import cpu_count, cpu_model
from simkit.measure.timing import median_iqr

DDP_BUCKET_BYTES = 25 * 2**20   # DDP's default bucket_cap_mb = 25


# ----------------------------------------------------------------------------- model
def eager_attention(q, k, v, causal: bool, fused: bool = False, dropout: float = 0.0, training: bool = True):
    """softmax(QK^T / sqrt(d)) V with the score matrix materialized; GQA by broadcasting k, v. Eager kernels
    run the softmax in fp32 (autocast's float32 list) and cast it back; fused kernels keep the compute
    dtype (Megatron's fused scale-mask-softmax)."""
    b, h, s, hd = q.shape
    kv = k.shape[1]
    q = q.view(b, kv, h // kv, s, hd)
    scores = q @ k.unsqueeze(2).transpose(-1, -2) * (1.0 / math.sqrt(hd))
    if causal:
        mask = torch.ones(s, s, dtype=torch.bool, device=q.device).triu(1)
        scores = scores.masked_fill(mask, float("-inf"))
    if fused:
        with _no_autocast(scores):
            probs = torch.softmax(scores, dim=-1)
    else:
        probs = torch.softmax(scores, dim=-1).to(v.dtype)
    if dropout and training:
        probs = F.dropout(probs, dropout)
    return (probs @ v.unsqueeze(2)).view(b, h, s, hd)


def _no_autocast(x):
    return torch.autocast(device_type=x.device.type, enabled=False)


class _ProjectHeads(torch.autograd.Function):
    """(b, heads, s, hd) attention output @ W^T -> (b, s, d), keeping the attention output itself for the
    weight gradient instead of a contiguous (b, s, d) copy (as Megatron's layout does)."""

    @staticmethod
    def forward(ctx, y, weight):
        ctx.save_for_backward(y, weight)
        b, h, s, hd = y.shape
        return y.transpose(1, 2).reshape(b, s, h * hd) @ weight.t()

    @staticmethod
    def backward(ctx, grad):
        y, weight = ctx.saved_tensors
        b, h, s, hd = y.shape
        grad_y = (grad @ weight).view(b, s, h, hd).transpose(1, 2)
        grad_w = grad.reshape(-1, grad.shape[-1]).t() @ y.transpose(1, 2).reshape(-1, h * hd)
        return grad_y, grad_w


class _SwiGLU(torch.autograd.Function):
    """silu(gate) * up from the up-projection output, keeping only that output and recomputing silu in
    backward (Megatron-Core's fused bias_swiglu)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        gate, up = x.chunk(2, dim=-1)
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        gate, up = x.chunk(2, dim=-1)
        sig = torch.sigmoid(gate)
        silu = gate * sig
        d_gate = grad * up * sig * (1 + gate * (1 - sig))
        return torch.cat([d_gate, grad * silu], dim=-1)


class _FusedCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy that keeps the logits in their dtype and writes the gradient into them in place
    (flash-attn's cross_entropy, TransformerEngine / Megatron fused CE); fp32 math row chunk by row chunk,
    so no full-size fp32 copy is ever made."""

    CHUNK = 32

    @staticmethod
    def forward(ctx, logits, targets):
        n = logits.shape[0]
        lse = torch.empty(n, dtype=torch.float32, device=logits.device)
        for i in range(0, n, _FusedCrossEntropy.CHUNK):
            lse[i:i + _FusedCrossEntropy.CHUNK] = torch.logsumexp(logits[i:i + _FusedCrossEntropy.CHUNK].float(), -1)
        picked = logits.gather(1, targets[:, None])[:, 0].float()
        ctx.save_for_backward(logits, targets, lse)
        return (lse - picked).mean()

    @staticmethod
    def backward(ctx, grad):
        logits, targets, lse = ctx.saved_tensors
        n = logits.shape[0]
        scale = grad / n
        for i in range(0, n, _FusedCrossEntropy.CHUNK):
            rows = logits[i:i + _FusedCrossEntropy.CHUNK]
            probs = torch.exp(rows.float() - lse[i:i + _FusedCrossEntropy.CHUNK, None])
            probs.scatter_add_(1, targets[i:i + _FusedCrossEntropy.CHUNK, None],
                               torch.full_like(probs[:, :1], -1.0))
            rows.copy_(probs * scale)
        return logits, None


def fused_cross_entropy(logits, targets):
    """Mean cross-entropy of (rows, vocab) logits with the gradient written into them in place."""
    return _FusedCrossEntropy.apply(logits, targets)


class Norm(nn.LayerNorm):
    """LayerNorm: under autocast eager PyTorch upcasts it to fp32; fused kernels run in the input's dtype."""

    def __init__(self, width: int, fused: bool):
        super().__init__(width)
        self.fused = fused

    def forward(self, x):
        if not self.fused or x.dtype == torch.float32:
            return super().forward(x)
        with _no_autocast(x):
            return F.layer_norm(x, self.normalized_shape, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


class Attention(nn.Module):
    def __init__(self, m: dict, selective: bool):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = m["n_heads"], m["n_kv_heads"], m["d_model"] // m["n_heads"]
        self.causal, self.fused, self.selective = m["causal"], m["attention"] == "fused", selective
        self.fused_kernels = m.get("kernels", "eager") == "fused"
        self.dropout = float(m.get("dropout", 0.0))
        self.qkv = nn.Linear(m["d_model"], (self.n_heads + 2 * self.n_kv) * self.head_dim, bias=False)
        self.out = nn.Linear(m["d_model"], m["d_model"], bias=False)

    def core(self, q, k, v):
        if self.fused:
            return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal,
                                                  dropout_p=self.dropout if self.training else 0.0,
                                                  enable_gqa=self.n_kv != self.n_heads)
        return eager_attention(q, k, v, self.causal, self.fused_kernels, self.dropout, self.training)

    def forward(self, x):
        b, s, d = x.shape
        hd = self.head_dim
        q, k, v = self.qkv(x).split([self.n_heads * hd, self.n_kv * hd, self.n_kv * hd], dim=-1)
        q, k, v = (t.view(b, s, -1, hd).transpose(1, 2) for t in (q, k, v))
        if self.selective and self.training:   # selective recompute: only the attention core (Korthikanti et al. 2022)
            y = checkpoint(self.core, q, k, v, use_reentrant=False)
        else:
            y = self.core(q, k, v)
        if self.fused_kernels:
            weight = self.out.weight
            if torch.is_autocast_enabled(y.device.type):
                weight = weight.to(torch.get_autocast_dtype(y.device.type))
            with _no_autocast(y):
                out = _ProjectHeads.apply(y.to(weight.dtype), weight)
        else:
            out = self.out(y.transpose(1, 2).reshape(b, s, d))
        return F.dropout(out, self.dropout, self.training) if self.dropout else out


class MLP(nn.Module):
    def __init__(self, m: dict):
        super().__init__()
        d, ff = m["d_model"], m["d_ff"]
        self.swiglu = m["mlp"] == "swiglu"
        self.fused = m.get("kernels", "eager") == "fused"
        self.dropout = float(m.get("dropout", 0.0))
        self.up = nn.Linear(d, 2 * ff if self.swiglu else ff, bias=False)
        self.down = nn.Linear(ff, d, bias=False)

    def forward(self, x):
        if self.swiglu:   # SwiGLU (Shazeer 2020): silu(x W1) * (x W3), W1 and W3 in one GEMM
            h = self.up(x)
            if self.fused:
                with _no_autocast(h):
                    act = _SwiGLU.apply(h)
            else:
                gate, up = h.chunk(2, dim=-1)
                act = F.silu(gate) * up
            out = self.down(act)
        else:
            out = self.down(F.gelu(self.up(x)))
        return F.dropout(out, self.dropout, self.training) if self.dropout else out


class Block(nn.Module):
    def __init__(self, m: dict, selective: bool):
        super().__init__()
        fused = m.get("kernels", "eager") == "fused"
        self.ln1, self.ln2 = Norm(m["d_model"], fused), Norm(m["d_model"], fused)
        self.attn, self.mlp = Attention(m, selective), MLP(m)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Transformer(nn.Module):
    """Pre-LN decoder (causal) or encoder with an LM head and cross-entropy loss.

    `kernels: fused` runs the kernels a fused stack runs (Megatron-Core / TransformerEngine): the
    residual stream, the norms and the softmax of eager attention in the compute dtype, SwiGLU keeping only
    the up-projection output, the attention output projected without a contiguous copy; `eager` runs plain
    PyTorch ops under autocast. `cross_entropy: fused` keeps the logits in the compute dtype and writes
    the gradient in place; `fp32` is F.cross_entropy (fp32 under autocast)."""

    def __init__(self, m: dict, checkpointing: str = "none", cross_entropy: str = "fp32",
                 compute_dtype: torch.dtype | None = None):
        super().__init__()
        self.embed = nn.Embedding(m["vocab_size"], m["d_model"])
        self.blocks = nn.ModuleList(Block(m, checkpointing == "selective") for _ in range(m["n_layers"]))
        self.ln_f = Norm(m["d_model"], m.get("kernels", "eager") == "fused")
        self.head = nn.Linear(m["d_model"], m["vocab_size"], bias=False)
        if m["tied_embeddings"]:
            self.head.weight = self.embed.weight
        self.full_checkpointing = checkpointing == "full"
        self.fused_residual = m.get("kernels", "eager") == "fused" and compute_dtype is not None
        self.compute_dtype = compute_dtype
        self.fused_loss = cross_entropy == "fused"

    def forward(self, tokens, targets):
        x = self.embed(tokens)
        if self.fused_residual:
            x = x.to(self.compute_dtype)
        for block in self.blocks:
            if self.full_checkpointing and self.training:
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        logits = self.head(self.ln_f(x))
        if self.fused_loss:
            with _no_autocast(logits):
                return fused_cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())   # tied weights are listed once


# ----------------------------------------------------------------------------- optimizers
class Lamb(torch.optim.Optimizer):
    """LAMB (You et al. 2019, arXiv:1904.00962, Algorithm 2) with bias correction; a plain per-tensor loop."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(step=0, m=torch.zeros_like(p), v=torch.zeros_like(p))
                state["step"] += 1
                m, v, t = state["m"], state["v"], state["step"]
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                update = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt_().add_(group["eps"]))
                update.add_(p, alpha=group["weight_decay"])
                w_norm, u_norm = p.norm(), update.norm()
                trust = torch.where((w_norm > 0) & (u_norm > 0), w_norm / u_norm, torch.ones_like(w_norm))
                p.sub_(update * (group["lr"] * trust))


def make_optimizer(name: str, params) -> tuple[torch.optim.Optimizer, str]:
    """The plan's optimizer and a description of the implementation used."""
    params = list(params)
    if name == "lamb":
        return Lamb(params), "LAMB (simkit's simple per-tensor implementation)"
    cls, kwargs = {"adamw": (torch.optim.AdamW, dict(lr=1e-4, weight_decay=0.1)),
                   "adam": (torch.optim.Adam, dict(lr=1e-4)),
                   "sgd": (torch.optim.SGD, dict(lr=1e-3, momentum=0.9))}[name]
    try:
        return cls(params, fused=True, **kwargs), f"torch.optim.{cls.__name__}(fused=True)"
    except (RuntimeError, ValueError, TypeError):
        return cls(params, foreach=True, **kwargs), f"torch.optim.{cls.__name__}(foreach=True)"


# ----------------------------------------------------------------------------- precision
def precision_context(precision: str, device: torch.device):
    """(autocast context factory, GradScaler or None, note)."""
    if device.type == "cuda":   # set either way: an earlier tf32 plan in the same process must not leak
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = precision == "tf32"
    if precision in ("fp32", "tf32"):
        if precision == "tf32" and device.type == "cuda":
            return contextlib.nullcontext, None, "tf32 matmuls enabled"
        note = "tf32 measured as fp32 (no tf32 on CPU)" if precision == "tf32" else "fp32, no autocast"
        return contextlib.nullcontext, None, note
    if precision not in ("bf16", "fp16"):
        raise ValueError(f"precision {precision!r} cannot be measured live; use fp32, tf32, bf16 or fp16")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    autocast = lambda: torch.autocast(device_type=device.type, dtype=dtype)  # noqa: E731
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    return autocast, scaler, f"torch.autocast({precision}) with fp32 master weights" + (
        " and GradScaler" if scaler else "")


# ----------------------------------------------------------------------------- timing
class Clock:
    """Marks points in time; on CUDA with events (no host sync inside a step), on CPU perf_counter."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def elapsed_s(self, start, end) -> float:
        if self.cuda:
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        return end - start

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()


class Trainer:
    """One model, optimizer and batch; `step()` runs one optimizer step and returns its timings."""

    def __init__(self, config: dict, device: torch.device, ddp: bool):
        m, t = config["model"], config["training"]
        torch.manual_seed(1234)
        self.device, self.ga, self.ddp = device, t["grad_accum_steps"], ddp
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t["precision"])
        self.implementation, self.hf_model = config.get("implementation", "simkit"), None
        if self.implementation == "hf":   # the plan's model as a Hugging Face transformers class
            from simkit.measure import hf_models

            model, self.hf_model = hf_models.build(m, t)
        else:
            model = Transformer(m, t["activation_checkpointing"], t.get("cross_entropy", "fp32"), dtype)
        self.model = model.to(device)
        self.n_params = count_parameters(self.model)
        if ddp:
            from torch.nn.parallel import DistributedDataParallel

            ids = [device.index] if device.type == "cuda" else None
            self.model = DistributedDataParallel(self.model, device_ids=ids)
        self.optimizer, self.optimizer_impl = make_optimizer(t["optimizer"], self.model.parameters())
        self.autocast, self.scaler, self.precision_note = precision_context(t["precision"], device)
        shape = (t["micro_batch_size"], m["seq_len"])
        self.tokens = torch.randint(m["vocab_size"], shape, device=device)
        self.targets = torch.randint(m["vocab_size"], shape, device=device)
        self.clock = Clock(device)

    def _no_sync(self, sync: bool):
        return self.model.no_sync() if self.ddp and not sync else contextlib.nullcontext()

    def step(self, sync: bool = True, update: bool = True) -> dict:
        """Timings of one step: forward and backward summed over micro-steps, the last backward apart."""
        clock, marks = self.clock, []
        clock.sync()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = clock.mark()
        for i in range(self.ga):
            with self._no_sync(sync and i == self.ga - 1):
                a = clock.mark()
                with self.autocast():
                    loss = self.model(self.tokens, self.targets) / self.ga
                b = clock.mark()
                (self.scaler.scale(loss) if self.scaler else loss).backward()
                marks.append((a, b, clock.mark()))
        before_opt = clock.mark()
        if update:
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        end = clock.mark()
        clock.sync()
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
        fwd = [clock.elapsed_s(a, b) for a, b, _ in marks]
        bwd = [clock.elapsed_s(b, c) for _, b, c in marks]
        return {"step": clock.elapsed_s(start, end), "forward": sum(fwd), "backward": sum(bwd),
                "last_backward": bwd[-1], "optimizer": clock.elapsed_s(before_opt, end), "page_faults": faults}


def _median(values: list[float]) -> float:
    return median_iqr(values)[0] if values else 0.0


def measure_all_reduce_s(n_params: int, device: torch.device, repeats: int = 5) -> float:
    """Time of all-reducing n_params fp32 gradients in DDP-sized buckets (what DDP would send unhidden)."""
    import torch.distributed as dist

    per_bucket = max(1, DDP_BUCKET_BYTES // 4)
    sizes = [min(per_bucket, n_params - i) for i in range(0, n_params, per_bucket)]
    buffers = [torch.ones(n, device=device) for n in sizes]
    times = []
    for r in range(repeats + 1):
        dist.barrier()
        t0 = time.perf_counter()
        for buf in buffers:
            dist.all_reduce(buf)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if r:   # the first round warms the connections
            times.append(time.perf_counter() - t0)
    return _median(times)


# ----------------------------------------------------------------------------- environment
def local_device(kind: str = "auto") -> str:
    """'cuda' when asked or available (for 'auto'), else 'cpu'."""
    if kind == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("no CUDA device is available")
    return kind


def available_memory_bytes(kind: str) -> float:
    """Free GPU memory (one device) or available host RAM."""
    if kind == "cuda":
        return float(torch.cuda.mem_get_info()[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def local_device_count(kind: str) -> int:
    if kind == "cuda":
        return torch.cuda.device_count()
    return cpu_count()


def environment(device: torch.device, world_size: int) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()
    return {"host": socket.gethostname(), "device": device.type, "device_name": name,
            "torch_version": torch.__version__, "cuda_version": torch.version.cuda,
            "python_version": platform.python_version(), "threads": torch.get_num_threads(),
            "world_size": world_size, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


# ----------------------------------------------------------------------------- measuring
def _summarize(trainer: Trainer, timed: list[dict], probes: list[dict], comm_total_s: float) -> dict:
    steps = [t["step"] for t in timed]
    exposed = 0.0
    if probes:   # communication = the synchronizing backward minus the same backward under no_sync
        exposed = max(0.0, _median([t["last_backward"] for t in timed]) - _median([p["last_backward"] for p in probes]))
    parts = {k: _median([t[k] for t in timed]) for k in ("forward", "backward", "optimizer")}
    parts["backward"] -= exposed
    # other = what the step spends outside forward, backward and optimizer, per step (then the median)
    other = _median([t["step"] - t["forward"] - t["backward"] - t["optimizer"] for t in timed])
    breakdown = dict(parts, communication_exposed=exposed, communication_total=comm_total_s, other=max(0.0, other))
    return {"step_time_s": _median(steps), "step_time_iqr_s": median_iqr(steps)[1], "step_time_min_s": min(steps),
            "step_times_s": steps,
            "breakdown_s": breakdown, "n_params": trainer.n_params,
            # minor page faults: host memory freshly mapped and touched in a step (allocator behaviour)
            "page_faults_per_step": _median([t["page_faults"] for t in timed]),
            "optimizer_impl": trainer.optimizer_impl, "precision_note": trainer.precision_note,
            "implementation": trainer.implementation, **({"hf_model": trainer.hf_model} if trainer.hf_model else {})}


PROBE_SHAPE = (1024, 1024, 1024)
PROBE_S = 0.3


def probe_gemm(kind: str, threads: int, dtype: str) -> list[float]:
    """FLOP/s samples of one GEMM (PROBE_SHAPE, the plan's GEMM dtype) timed as `simkit calibrate`
    times it, for PROBE_S seconds: how fast the machine is right now, to hold against the profile."""
    from simkit.measure import Target
    from simkit.measure.gemm import measure_gemm
    from simkit.measure.timing import Budget

    budget = Budget(warmup_s=0.05, measure_s=PROBE_S, min_samples=3, max_samples=20, min_sample_s=2e-3)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)   # the training's denormal setting stays as it is
    try:
        return list(measure_gemm(Target(kind=kind, threads=threads), dtype, PROBE_SHAPE, budget).samples)
    finally:
        torch.set_num_threads(previous)


def _probe_around(config: dict, kind: str, world: int, samples: list[float]) -> None:
    """Rank 0 probes the GEMM rate with the profile's thread count (the other ranks wait at a barrier),
    so that it measures what the profile measured."""
    if not config.get("probe_dtype"):
        return
    threads = int(config.get("probe_threads") or config["threads"])   # the profile's, while the others wait
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
        if dist.get_rank() == 0:
            samples += probe_gemm(kind, threads, config["probe_dtype"])
        dist.barrier()
    else:
        samples += probe_gemm(kind, threads, config["probe_dtype"])


MEMORY_CATEGORIES = {"PARAMETER": "weights", "GRADIENT": "gradients", "OPTIMIZER_STATE": "optimizer_states",
                     "ACTIVATION": "activations", "AUTOGRAD_DETAIL": "activations", "TEMPORARY": "temporaries",
                     "INPUT": "inputs", None: "unknown"}


@contextlib.contextmanager
def _stderr_silenced():
    """File descriptor 2 to /dev/null: torch's profiler (kineto) writes 'USDT: ... profiler_start/stop'
    lines there from C++ on every start and stop, which would land in the user's terminal."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profile_memory_step(trainer: "Trainer") -> dict:
    """Peak memory of one training step on the CPU from torch.profiler's memory timeline (every tensor the
    CPU allocator holds, by kind): the peak's total and what it is made of."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline, _CATEGORY_TO_INDEX

    with _stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                                     with_stack=True) as prof:
        trainer.step()
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline(torch.device("cpu"))
    totals = [sum(row) for row in sizes]
    peak = max(range(len(totals)), key=totals.__getitem__)
    by_kind: dict[str, float] = {}
    for category, index in _CATEGORY_TO_INDEX.items():
        name = MEMORY_CATEGORIES.get(category.name if category is not None else None, "unknown")
        by_kind[name] = by_kind.get(name, 0.0) + float(sizes[peak][index + 1])
    return {"allocated_peak_bytes": float(totals[peak]), "by_kind_bytes": by_kind,
            "method": "torch.profiler memory timeline of one step (every tensor of the CPU allocator)"}


def cuda_memory(device: torch.device) -> dict:
    return {"allocated_peak_bytes": float(torch.cuda.max_memory_allocated(device)),
            "reserved_peak_bytes": float(torch.cuda.max_memory_reserved(device)),
            "method": "torch.cuda.max_memory_allocated / max_memory_reserved over the timed steps"}


class _Status:
    """Under torchrun, what this rank is doing (`simkit-train: rank R: ...`) and, when it fails, one
    `simkit-train error: ...` line: `simkit validate` names the rank that failed or hung from them.
    Silent in a single process (the CLI's own output)."""

    def __init__(self, world: int):
        self.rank, self.loud, self.doing = int(os.environ.get("RANK", "0")), world > 1, "starting"

    def say(self, doing: str) -> None:
        self.doing = doing
        if self.loud:
            print(f"simkit-train: rank {self.rank}: {doing}", flush=True)

    def failed(self, exc: BaseException) -> None:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        print(f"simkit-train error: rank {self.rank} failed while {self.doing}: {type(exc).__name__}: {first}",
              file=sys.stderr, flush=True)


def run(config: dict, status: _Status | None = None) -> dict:
    """Warm up, time `steps` optimizer steps and return the measurement (every rank; rank 0's is kept)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    status = status or _Status(world)
    torch.set_num_threads(int(config["threads"]))
    kind = config["device"]
    # As `simkit calibrate` does: random-token training drives gradients and Adam states into subnormal
    # floats, whose slow path on x86 makes CPU steps several times slower and erratic.
    flushed = bool(config.get("flush_denormal", True)) and torch.set_flush_denormal(True)
    ddp = world > 1
    if ddp:
        import torch.distributed as dist

        local = int(os.environ.get("LOCAL_RANK", "0"))
        if kind == "cuda":
            torch.cuda.set_device(local)
        status.say("joining the process group")
        # a rank waits this long for the others in any one collective before giving up with an error
        timeout = datetime.timedelta(seconds=float(config.get("timeout_s") or 1800))
        dist.init_process_group("nccl" if kind == "cuda" else "gloo", timeout=timeout)
        device = torch.device(kind, local) if kind == "cuda" else torch.device("cpu")
    else:
        device = torch.device(kind)
    status.say("building the model")
    trainer = Trainer(config, device, ddp)
    for i in range(config["warmup"]):
        status.say(f"warm-up step {i + 1} of {config['warmup']}")
        trainer.step()
    probe: list[float] = []
    status.say("timing the probe GEMM")
    _probe_around(config, kind, world, probe)
    if kind == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    timed = []
    for i in range(config["steps"]):
        status.say(f"timed step {i + 1} of {config['steps']}")
        timed.append(trainer.step())
    memory = cuda_memory(device) if kind == "cuda" else None
    status.say("timing the probe GEMM")
    _probe_around(config, kind, world, probe)
    if memory is None and config.get("measure_memory", True):
        status.say("profiling the memory of one step")
        try:
            memory = profile_memory_step(trainer)
        except Exception as exc:   # a private torch API: say so rather than fail the measurement
            memory = {"error": f"the memory timeline failed: {type(exc).__name__}: {exc}"}
    probes, comm_total = [], 0.0
    if ddp:
        status.say("timing steps without gradient synchronization")
        probes = [trainer.step(sync=False, update=False) for _ in range(min(config["steps"], 5))]
        status.say("timing the gradient all-reduce")
        comm_total = measure_all_reduce_s(trainer.n_params, device)
        status.say("gathering the step times")
        timed = _slowest_rank(timed)
    result = _summarize(trainer, timed, probes, comm_total)
    if memory:
        result["memory"] = memory
    if probe:
        result["probe"] = {"dtype": config["probe_dtype"], "shape": list(PROBE_SHAPE),
                           "flop_per_s_median": _median(probe), "samples": len(probe)}
    result["environment"] = dict(environment(device, world), flush_denormal=flushed)
    if ddp:
        import torch.distributed as dist

        dist.destroy_process_group()
    status.say("done")
    return result


def _slowest_rank(timed: list[dict]) -> list[dict]:
    """Per step, the timings of the rank whose step took longest (a step ends when the last rank ends)."""
    import torch.distributed as dist

    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, timed)
    return [max(per_rank, key=lambda t: t["step"]) for per_rank in zip(*everyone)]


def measure(config: dict) -> dict:
    """In-process measurement of one single-device plan (see `run` for the config keys)."""
    return run(config)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="simkit training worker (started by `simkit validate`)")
    parser.add_argument("--config", required=True, help="JSON file with model, training, steps, warmup, threads, device")
    parser.add_argument("--out", required=True, help="JSON file rank 0 writes the measurement to")
    args = parser.parse_args(argv)
    config = json.loads(Path(args.config).read_text())
    status = _Status(int(os.environ.get("WORLD_SIZE", "1")))
    try:
        result = run(config, status)
    except Exception as exc:
        status.failed(exc)
        raise
    if int(os.environ.get("RANK", "0")) == 0:
        tmp = Path(args.out).with_suffix(".tmp")
        tmp.write_text(json.dumps(result))
        os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
