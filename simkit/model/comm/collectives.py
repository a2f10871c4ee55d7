"""Collective and point-to-point communication time on a node/NIC hierarchy, as NCCL runs it.

Conventions are nccl-tests' (doc/PERFORMANCE.md): a collective over n ranks of a buffer of S bytes takes
    time = latency + F * (n - 1) / n * S / busbw,   F = 2 for all-reduce, 1 for reduce-scatter / all-gather,
where busbw, the bus bandwidth, is what one rank's busiest link sustains.

Bandwidth of a group with k members per node on N nodes (topology.Group):
- inside one node (N = 1): the per-device intra-node link (NVLink through NVSwitch, PCIe) at its measured
  efficiency;
- across nodes: NCCL builds one ring (or tree) per channel and sends each through a different NIC, so a
  node's group traffic is bounded by the node's NICs. All devices of a node communicate at the same time in
  the symmetric layouts Megatron, NeMo and FSDP use (every tensor-parallel rank has its own data-parallel
  group), so a group gets k / devices_per_node of the node's NIC bandwidth:
      busbw = min(intra-node busbw, k * NICs * NIC bandwidth * efficiency / devices_per_node).
  Check: 4 nodes x 8 B200 with 8 x 50 GB/s NICs each measured 381.8 GB/s all-reduce busbw at 16 GiB
  (shared/reference/hardware-facts.md 8.6) = 0.95 x 8 x 50; with tensor_parallel 8 each data-parallel group
  has one rank per node and gets one NIC ("rail-optimized" placement).

Latency: NCCL's tuning model (src/graph/tuning.cc) charges a latency per ring step, intra-node steps at the
NVLink/PCIe hop latency and steps that cross a node at the network's. A ring over n ranks takes F * (n - 1)
steps, F * (N - 1) of them between nodes, so ring latency grows linearly with the ranks. For all-reduce
across nodes NCCL also has the double binary tree (NCCL 2.4, Sanders et al. 2009): a chain inside each
node and a tree of depth log2(N) between nodes at the same bandwidth, so latency grows with log2 of the
nodes instead ("Massively Scale Your Deep Learning Training with NCCL 2.4", NVIDIA blog 2019). Inside an
NVSwitch node with NVLink SHARP (H100/H200/B200) the switch reduces: every GPU sends and receives the
buffer once, so the algorithm bandwidth stays at the link's SHARP bandwidth whatever the GPU count
(8x H200: algbw 259-270 GB/s for 5-8 GPUs, hardware-facts.md 8.3). Like NCCL's tuner, the fastest of the
algorithms that apply is taken. Reduce-scatter and all-gather only have the ring.

A calibrated profile's measured fits replace the catalogue links: its intra-node fit (and measured sizes)
when the plan names no intra-node link, its `inter_node` fit for groups that span nodes.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simkit.hardware.types import CollectiveFit, Device, Interconnect
from simkit.model.comm.topology import Group
from simkit.model.params import value as fitted

# Achieved bus bandwidth / link spec when an interconnect file gives no measured efficiency.
# Assumption backed by the measured NVLink 3 (78%) and NVLink 4 ring (82%) all-reduce busbw in
# stas00/ml-engineering network/README.md (shared/reference/hardware-facts.md, sec. 8.2).
DEFAULT_LINK_EFFICIENCY = 0.8

_FACTOR = {"all_reduce": 2.0, "reduce_scatter": 1.0, "all_gather": 1.0}


@dataclass(frozen=True)
class Fabric:
    """The links of a system: the per-device intra-node link, the nodes' NICs, and calibrated fits."""

    device: Device
    intra: Interconnect | None
    inter: Interconnect | None
    nics_per_node: object
    devices_per_node: object

    # ------------------------------------------------------------------ calibrated fits
    def intra_fit(self, kind: str) -> CollectiveFit | None:
        """A calibrated profile's intra-node fit, used when the plan names no intra-node link."""
        cal = self.device.calibration
        return cal.collectives.get(kind) if (cal is not None and self.intra is None) else None

    def inter_fit(self, kind: str) -> CollectiveFit | None:
        """A calibrated profile's fit measured across nodes, used when the plan names no inter-node link."""
        cal = self.device.calibration
        return cal.collectives_inter.get(kind) if (cal is not None and self.inter is None) else None

    # ------------------------------------------------------------------ links
    def intra_busbw(self, kind: str) -> float:
        fit = self.intra_fit(kind)
        scale = fitted(self.device, "network")
        if fit is not None:
            return fit.bus_bandwidth_bytes_per_s * scale
        if self.intra is None:
            return np.inf
        return self.intra.bandwidth_bytes_per_s * (self.intra.efficiency or DEFAULT_LINK_EFFICIENCY) * scale

    def node_nic_bandwidth(self):
        """Bytes/s one node's NICs sustain together (per direction)."""
        if self.inter is None:
            return np.inf
        return (np.asarray(self.nics_per_node, dtype=float) * self.inter.bandwidth_bytes_per_s
                * (self.inter.efficiency or DEFAULT_LINK_EFFICIENCY) * fitted(self.device, "network"))

    def intra_hop_s(self) -> float:
        return self.intra.latency_s if self.intra is not None else 0.0

    def inter_hop_s(self) -> float:
        return self.inter.latency_s if self.inter is not None else self.intra_hop_s()


def _ring(kind: str, nbytes, n, k, nodes, fabric: Fabric):
    f = _FACTOR[kind]
    crossing = nodes > 1
    nic = k * fabric.node_nic_bandwidth() / np.asarray(fabric.devices_per_node, dtype=float)
    bus = np.where(crossing, np.minimum(fabric.intra_busbw(kind), nic), fabric.intra_busbw(kind))
    inter_steps = np.where(crossing, f * (nodes - 1), 0.0)
    intra_steps = np.maximum(f * (n - 1) - inter_steps, 0.0)
    latency = intra_steps * fabric.intra_hop_s() + inter_steps * fabric.inter_hop_s()
    return latency + f * (n - 1) / n * nbytes / bus, bus


def _tree(nbytes, n, k, nodes, bus, fabric: Fabric):
    """All-reduce by NCCL's double binary tree across nodes (chain inside each node), ring bandwidth."""
    depth = np.ceil(np.log2(np.maximum(nodes, 1.0)))
    latency = 2.0 * ((k - 1) * fabric.intra_hop_s() + depth * fabric.inter_hop_s())
    return np.where(nodes > 1, latency + 2.0 * (n - 1) / n * nbytes / bus, np.inf)


def _nvls(nbytes, n, nodes, fabric: Fabric):
    """All-reduce with NVLink SHARP inside one node: the switch reduces, each GPU moves the buffer once."""
    link = fabric.intra
    if link is None or link.sharp_efficiency is None:
        return np.inf
    algbw = link.bandwidth_bytes_per_s * link.sharp_efficiency * fitted(fabric.device, "network")
    return np.where((nodes == 1) & (n > 2), 2.0 * fabric.intra_hop_s() + nbytes / algbw, np.inf)


def collective_time(kind: str, nbytes, g: Group, fabric: Fabric):
    """Seconds for one collective of `nbytes` (the full buffer, nccl-tests 'size') over group `g`."""
    n = np.asarray(g.size, dtype=float)
    k = np.asarray(g.per_node, dtype=float)
    nodes = np.asarray(g.nodes, dtype=float)
    nbytes = np.asarray(nbytes, dtype=float)
    ring, bus = _ring(kind, nbytes, n, k, nodes, fabric)
    best = ring
    if kind == "all_reduce":
        best = np.minimum(best, np.minimum(_tree(nbytes, n, k, nodes, bus, fabric), _nvls(nbytes, n, nodes, fabric)))
    best = _calibrated(kind, nbytes, n, nodes, fabric, best)
    return np.where(n > 1, best, 0.0)


def _calibrated(kind: str, nbytes, n, nodes, fabric: Fabric, modelled):
    """Measured fits where the profile has them: the measured times at the measured rank count, else the
    alpha-beta fit with its latency scaled by the ring steps."""
    out = modelled
    for fit, where in ((fabric.intra_fit(kind), nodes == 1), (fabric.inter_fit(kind), nodes > 1)):
        if fit is None or not fit.nproc:
            continue
        f = _FACTOR[kind]
        steps = np.maximum(n - 1, 1.0) / max(fit.nproc - 1, 1)
        alpha_beta = fit.latency_s * steps + f * (n - 1) / n * nbytes / fit.bus_bandwidth_bytes_per_s
        if len(fit.points) >= 2:
            alpha_beta = np.where(n == fit.nproc, measured_time(fit.points, nbytes), alpha_beta)
        out = np.where(where, alpha_beta / fitted(fabric.device, "network"), out)
    return out


def p2p_time(nbytes, crosses_nodes, fabric: Fabric):
    """Seconds to send `nbytes` to one neighbour (pipeline stages, ring attention), every device of the
    node sending at once: over the intra-node link, or the device's share of the node's NICs."""
    nbytes = np.asarray(nbytes, dtype=float)
    intra = fabric.intra_busbw("all_gather")       # all-gather busbw: what one link moves per direction
    fit = fabric.inter_fit("all_gather")
    nic = fabric.node_nic_bandwidth() / np.asarray(fabric.devices_per_node, dtype=float)
    if fit is not None:
        nic = fit.bus_bandwidth_bytes_per_s * fitted(fabric.device, "network")
    inside = fabric.intra_hop_s() + nbytes / intra
    across = fabric.inter_hop_s() + nbytes / np.minimum(intra, nic)
    return np.where(np.asarray(crosses_nodes), across, inside)


def measured_time(points, nbytes):
    """Seconds for `nbytes` from measured (bytes, seconds) points, smallest size first: linear between
    neighbours (time grows linearly with size in the alpha-beta model), the smallest point's time
    below the range (latency-bound), and beyond the largest point the slope of the last two."""
    sizes = np.array([p[0] for p in points], dtype=float)
    times = np.array([p[1] for p in points], dtype=float)
    x = np.asarray(nbytes, dtype=float)
    slope = max((times[-1] - times[-2]) / (sizes[-1] - sizes[-2]), 0.0)
    inside = np.interp(x, sizes, times)
    return np.where(x > sizes[-1], times[-1] + (x - sizes[-1]) * slope, inside)
