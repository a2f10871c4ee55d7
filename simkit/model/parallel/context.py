"""Context parallelism: the sequence split over CP ranks, attention computed ring-wise (Liu et al. 2023,
"Ring Attention with Blockwise Transformers"; Megatron-Core / TransformerEngine `cp_comm_type: p2p`).

Each rank keeps seq_len / CP tokens of Q, K and V. Attention runs in CP steps: in each, a rank computes
its queries against one K/V block while it sends that block to the next rank of the ring and receives
the next one, so a step costs max(block transfer, block attention). Megatron-Core balances causal
attention by giving rank i the sequence chunks i and 2CP-1-i, so every step does the same work:
1/CP of the rank's attention. The backward pass moves K/V and their gradients (twice the bytes) around
the ring beside the attention backward. The linear layers are unaffected apart from seeing
seq_len / CP tokens; gradients are reduced over the data x context group (parallel_state's dp-cp
group), which `data.py` handles.
"""
from __future__ import annotations

import numpy as np

from simkit.model.comm.collectives import Fabric, p2p_time
from simkit.model.comm.topology import Group


def kv_block_bytes(*, batch, local_seq_len, kv_heads_local, head_dim, act_bytes):
    """Bytes of one K/V block a rank passes on: K and V of its seq_len / CP tokens."""
    return 2.0 * batch * local_seq_len * kv_heads_local * head_dim * act_bytes


def ring_attention_exposed(*, kv_bytes, attention_fwd_s, attention_bwd_s, group: Group, fabric: Fabric):
    """(exposed forward, exposed backward, total) seconds of the K/V ring for one layer and micro-batch.

    attention_fwd_s / attention_bwd_s: the rank's whole attention time for the layer (all CP steps)."""
    cp = np.asarray(group.size, dtype=float)
    steps = np.maximum(cp - 1, 0.0)
    send = p2p_time(kv_bytes, group.crosses_nodes, fabric)
    per_step_fwd = attention_fwd_s / np.maximum(cp, 1.0)
    per_step_bwd = attention_bwd_s / np.maximum(cp, 1.0)
    exposed_fwd = steps * np.maximum(send - per_step_fwd, 0.0)
    exposed_bwd = steps * np.maximum(2 * send - per_step_bwd, 0.0)
    total = steps * 3 * send
    return exposed_fwd, exposed_bwd, np.where(cp > 1, total, 0.0)
