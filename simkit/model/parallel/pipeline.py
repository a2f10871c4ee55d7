"""Pipeline parallelism: layers split into stages, micro-batches flowing through them (Narayanan et al.
2021, "Efficient Large-Scale Language Model Training on GPU Clusters Using Megatron-LM", Sec. 2.2).

- 1F1B (PipeDream-Flush): with p stages of equal time t per micro-batch (forward + backward) and m
  micro-batches per step, a step takes (m + p - 1) t: the bubble is (p - 1) t, a fraction (p - 1) / m of
  the ideal m t (Sec. 2.2.1).
- Interleaved 1F1B with v model chunks per stage: the bubble shrinks to (p - 1) t / v, fraction
  (p - 1) / (v m) (Sec. 2.2.2), for v times as many point-to-point sends.
- Uneven stages: the steady state runs at the slowest stage; fill and drain pass once through every other
  stage, so a step takes m t_max + (sum of the stage times - t_max) / v, which is (m + (p - 1) / v) t when
  the stages are equal.
- Layers per stage: n_layers / p, the remainder one each to the middle stages first (the first stage holds
  the embedding, the last the LM head and loss: Megatron-Bridge counts those as layers,
  account_for_embedding/loss_in_pipeline_split), then to the first stage.
- Point-to-point: each stage boundary sends one micro-batch's activations forward and its gradient back;
  a TP rank sends 1/tp of them (Megatron's scatter-gather of pipeline tensors, or SP-sharded activations).
  Without interleaving the sends are blocking and lie on the critical path of every micro-batch; the
  interleaved schedule overlaps them with compute (Megatron's --overlap-p2p-communication, on by
  default), leaving the fill and drain exposed.
- Memory: the first stage holds min(p, m) micro-batches of its layers' activations, so n_layers / p x p
  layers' worth; interleaving multiplies that by 1 + (p - 1) / (p v) (Megatron-LM,
  megatron/training/theoretical_memory_usage.py); see in_flight_microbatches for every stage.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class StageLayers:
    """Transformer layers on the first, busiest middle and last stage (arrays or scalars)."""

    first: object
    middle: object
    last: object
    stages: object


def stage_layers(n_layers, pp) -> StageLayers:
    """Layers per stage with the remainder on the middle stages first, then the first stage."""
    n_layers = np.asarray(n_layers, dtype=float)
    pp = np.asarray(pp, dtype=float)
    base = np.floor(n_layers / pp)
    rem = n_layers - base * pp
    middles = np.maximum(pp - 2, 0.0)
    first = base + np.where(rem > middles, 1.0, 0.0)
    last = base + np.where(rem > middles + 1, 1.0, 0.0)
    middle = np.where(middles > 0, base + np.where(rem > 0, 1.0, 0.0), 0.0)
    # one stage: it is first and last and holds every layer
    first = np.where(pp == 1, n_layers, first)
    last = np.where(pp == 1, n_layers, last)
    return StageLayers(first=first, middle=middle, last=last, stages=pp)


def schedule_time(*, stage_times, stage_sum, microbatches, virtual_stages):
    """Seconds for one step of the pipeline: m t_max + (sum - t_max) / v.

    stage_times: the slowest stage's time per micro-batch (forward + backward + recompute);
    stage_sum: the sum over all stages of their time per micro-batch."""
    m = np.asarray(microbatches, dtype=float)
    v = np.asarray(virtual_stages, dtype=float)
    return m * stage_times + (stage_sum - stage_times) / v


def bubble_fraction(pp, microbatches, virtual_stages=1):
    """The idle share of an ideal step for equal stages: (p - 1) / (v m)."""
    return (np.asarray(pp, dtype=float) - 1) / (np.asarray(virtual_stages, dtype=float) * np.asarray(microbatches))


def p2p_bytes(*, batch, local_seq_len, d_model, act_bytes, tensor_parallel):
    """Bytes one rank sends across a stage boundary per micro-batch, each direction."""
    return batch * local_seq_len * d_model * act_bytes / np.asarray(tensor_parallel, dtype=float)


def p2p_exposed(*, send_s, pp, microbatches, virtual_stages):
    """(exposed, total) seconds of pipeline sends per step, forward activations and backward gradients.

    Total: each of a stage's v chunks sends and receives once per micro-batch, each direction, or the
    sends on the critical path if those are more (the fill and drain pass every boundary). Exposed:
    blocking sends on the critical path of every micro-batch (1F1B: m + p - 1 each way), or only the fill
    and drain when the interleaved schedule overlaps them."""
    pp = np.asarray(pp, dtype=float)
    m = np.asarray(microbatches, dtype=float)
    v = np.asarray(virtual_stages, dtype=float)
    on_path = np.where(v > 1, 2 * (pp - 1) * send_s, 2 * (m + pp - 1) * send_s)
    total = np.maximum(2 * v * m * send_s, on_path)
    return np.where(pp > 1, on_path, 0.0), np.where(pp > 1, total, 0.0)


def in_flight_microbatches(pp, microbatches, virtual_stages, stage=0):
    """Micro-batches whose activations stage `stage` (0 = first) holds at its peak, in units of its own
    layers' activations for one micro-batch.

    1F1B: stage s runs p - s forward passes before its first backward, so it holds min(p - s, m). The
    interleaved schedule warms up with 2 (p - s - 1) + (v - 1) p chunk-passes and holds one more in the
    steady state, each 1/v of the stage's layers: (2 (p - s - 1) + (v - 1) p + 1) / v, which for the first
    stage is p (1 + (p - 1) / (p v)), Megatron-LM's interleaved memory penalty
    (megatron/training/theoretical_memory_usage.py; warm-up counts from
    megatron/core/pipeline_parallel/schedules.py)."""
    pp = np.asarray(pp, dtype=float)
    v = np.asarray(virtual_stages, dtype=float)
    m = np.asarray(microbatches, dtype=float)
    s = np.asarray(stage, dtype=float)
    plain = np.minimum(pp - s, m)
    interleaved = np.minimum((2 * (pp - s - 1) + (v - 1) * pp + 1) / v, m)
    return np.where(v > 1, interleaved, plain)
