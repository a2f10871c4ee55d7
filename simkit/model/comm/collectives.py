"""Collective communication time: alpha-beta model of ring algorithms with nccl-tests bus-bandwidth
conventions (nccl-tests doc/PERFORMANCE.md): all-reduce moves 2(n-1)/n x size per rank,
reduce-scatter and all-gather (n-1)/n x size. Across nodes the ring is limited by the slower of the
per-device intra-node link and the node's inter-node links (each NIC carries the traffic of one ring)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simkit.hardware import Device, Interconnect

# Achieved bus bandwidth / link spec when an interconnect file gives no measured efficiency.
# Assumption backed by the measured NVLink 3 (78%) and NVLink 4 ring (82%) all-reduce busbw in
# stas00/ml-engineering network/README.md (shared/reference/hardware-facts.md, sec. 8.2).
DEFAULT_LINK_EFFICIENCY = 0.8

_FACTOR = {"all_reduce": 2.0, "reduce_scatter": 1.0, "all_gather": 1.0}


@dataclass(frozen=True)
class Fabric:
    """How the devices of one data-parallel group talk to each other."""

    devices_per_node: object
    nodes: object
    intra: Interconnect | None
    inter: Interconnect | None
    inter_links: object
    device: Device

    def measured_fit(self, kind: str):
        """A calibrated profile's measured fit, used when the plan names no intra-node link."""
        cal = self.device.calibration
        return cal.collectives.get(kind) if (cal is not None and self.intra is None) else None

    def bus_bandwidth(self, kind: str) -> np.ndarray:
        """Bytes/s of bus bandwidth for a collective over all devices of the group."""
        measured = self.measured_fit(kind)
        if measured is not None:
            intra = measured.bus_bandwidth_bytes_per_s
        elif self.intra is not None:
            intra = self.intra.bandwidth_bytes_per_s * (self.intra.efficiency or DEFAULT_LINK_EFFICIENCY)
        else:
            intra = np.inf
        inter = np.inf
        if self.inter is not None:
            inter = self.inter_links * self.inter.bandwidth_bytes_per_s * (self.inter.efficiency or DEFAULT_LINK_EFFICIENCY)
        return np.where(np.asarray(self.nodes) > 1, np.minimum(intra, inter), intra)

    def latency(self, kind: str) -> np.ndarray:
        measured = self.measured_fit(kind)
        intra = measured.latency_s if measured is not None else (self.intra.latency_s if self.intra else 0.0)
        inter = self.inter.latency_s if self.inter else intra
        return np.where(np.asarray(self.nodes) > 1, max(intra, inter), intra)


def collective_time(kind: str, nbytes, n_ranks, fabric: Fabric):
    """Seconds for one collective of `nbytes` (the full buffer) over `n_ranks` ranks."""
    n = np.asarray(n_ranks, dtype=float)
    steps = np.where(n > 1, _FACTOR[kind] * (n - 1), 0.0)
    volume = np.where(n > 1, _FACTOR[kind] * (n - 1) / np.maximum(n, 1) * nbytes, 0.0)
    measured = fabric.measured_fit(kind)
    if measured is not None:
        # a measured fit already folds all ring steps into one latency term
        steps = np.where(n > 1, 1.0, 0.0)
    modelled = steps * fabric.latency(kind) + volume / fabric.bus_bandwidth(kind)
    if measured is None or len(measured.points) < 2 or not measured.nproc:
        return modelled
    single_node = np.asarray(fabric.nodes) == 1
    same_ranks = single_node & (n == measured.nproc)
    return np.where(same_ranks, measured_time(measured.points, nbytes), modelled)


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
