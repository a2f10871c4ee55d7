"""Rank placement: which devices form each parallel group, and how a group sits on the nodes.

Megatron-LM orders ranks with tensor parallelism innermost, then context, then data, then pipeline
parallelism (megatron/core/parallel_state.py, `order="tp-cp-ep-dp-pp"`): global rank
r = tp_rank + tp * (cp_rank + cp * (dp_rank + dp * pp_rank)), and ranks fill the nodes in order
(node = r // devices_per_node). A group whose members are `stride` ranks apart and that has `size`
members therefore covers a block of stride * size consecutive ranks:

- if the block fits in a node and the node size is a multiple of it, every group lies inside one node;
- if the block is larger than a node, the group spans several nodes with max(1, devices_per_node // stride)
  members on each (all groups alike when the sizes divide each other);
- otherwise (e.g. tensor_parallel 3 on 8-device nodes) some groups straddle a node boundary and run at the
  speed of the inter-node links, which is what a collective's slowest member decides.

All functions take numpy arrays or scalars, so a sweep evaluates many layouts at once.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Group:
    """One kind of parallel group, as seen by each of its members (arrays or scalars)."""

    size: object         # members of the group
    per_node: object     # members of the group on one node (1 when every member is on its own node)
    nodes: object        # nodes the group spans
    stride: object       # rank distance between neighbouring members

    @property
    def crosses_nodes(self):
        """True where the group's collectives run over the inter-node links."""
        return np.asarray(self.nodes) > 1


def group(size, stride, devices_per_node) -> Group:
    """How a group of `size` members `stride` ranks apart lies on nodes of `devices_per_node` devices."""
    size = np.asarray(size, dtype=float)
    stride = np.asarray(stride, dtype=float)
    dpn = np.asarray(devices_per_node, dtype=float)
    block = size * stride
    fits = (block <= dpn) & (np.fmod(dpn, np.maximum(block, 1.0)) == 0)   # fmod: mod of positive numbers
    per_node_spanning = np.minimum(np.maximum(np.floor(dpn / stride), 1.0), size)
    per_node = np.where(fits, size, per_node_spanning)
    # a group that does not fit lies on ceil(size / per_node) nodes, or straddles two when its block is
    # smaller than a node but does not divide it
    several = size > 1
    nodes = np.where(fits, 1.0, np.maximum(np.ceil(size / per_node), several + 1.0))
    per_node = np.where(fits | ~several, per_node, np.minimum(per_node, np.ceil(size / nodes)))
    return Group(size=size, per_node=per_node, nodes=nodes, stride=stride)


@dataclass(frozen=True)
class Placement:
    """The groups of a (tensor, context, data, pipeline) parallel layout on nodes of `devices_per_node`."""

    tensor: Group
    context: Group
    data: Group              # data-parallel replicas of one model shard (ZeRO sharding, DDP buckets)
    gradient: Group          # data x context: the group gradients are reduced over (Megatron's dp-cp group)
    pipeline: Group          # the stages of one pipeline (point-to-point neighbours)
    devices_per_node: object


def place(tp, cp, dp, pp, devices_per_node, *, tensor: Group | None = None, context: Group | None = None) -> Placement:
    """Megatron's rank order: TP innermost, then CP, then DP, then PP. `tensor` / `context`: those groups when
    the caller has them already (simulate computes them once per micro-batch shape)."""
    tp, cp, dp, pp = (np.asarray(x, dtype=float) for x in (tp, cp, dp, pp))
    tensor = group(tp, 1, devices_per_node) if tensor is None else tensor
    context = group(cp, tp, devices_per_node) if context is None else context
    return Placement(tensor=tensor, context=context,
                     data=group(dp, tp * cp, devices_per_node), gradient=_gradient_group(tp, cp, dp, devices_per_node),
                     pipeline=group(pp, tp * cp * dp, devices_per_node), devices_per_node=devices_per_node)


def _gradient_group(tp, cp, dp, devices_per_node) -> Group:
    """CP and DP ranks together reduce gradients (they hold the same weights): dp * cp members, `tp` apart,
    since CP is the next dimension out from TP and DP the one after it."""
    return group(dp * cp, tp, devices_per_node)


def describe(name: str, g: Group, devices_per_node: int) -> str | None:
    """A sentence for `predict` when a group's collectives leave the node (None when they do not)."""
    size, nodes, per_node = int(g.size), int(g.nodes), int(g.per_node)
    if size <= 1 or nodes <= 1:
        return None
    if size * int(g.stride) <= devices_per_node:
        return (f"each {name} group of {size} straddles a node boundary (devices_per_node {devices_per_node} is "
                f"not a multiple of its {size * int(g.stride)}-rank block): its collectives run over the "
                "inter-node links")
    return (f"each {name} group of {size} spans {nodes} nodes ({per_node} per node): its collectives run over "
            "the inter-node links")
