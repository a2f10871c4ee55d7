"""Collectives on the node/NIC hierarchy and rank placement: hand computations and the measured NCCL
bus bandwidths in shared/reference/hardware-facts.md (stas00/ml-engineering network/README.md)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from simkit import hardware as hw
from simkit.model.comm.collectives import Fabric, collective_time
from simkit.model.comm.topology import group, place

GIB, MIB = 2**30, 2**20


def fabric(system: str, nodes_nics=8, dpn=8) -> Fabric:
    s = hw.load_system(system)
    return Fabric(hw.load_device(s.device), hw.load_interconnect(s.intra_node), hw.load_interconnect(s.inter_node),
                  nodes_nics, dpn)


def busbw(kind: str, nbytes: float, n: int, seconds: float) -> float:
    factor = 2 * (n - 1) / n if kind == "all_reduce" else (n - 1) / n
    return nbytes / seconds * factor


# ----------------------------------------------------------------------------- placement
def test_placement_of_a_3d_layout_follows_megatron_order():
    # 64 GPUs on 8-GPU nodes, TP 4 x DP 4 x PP 4 (CP 1), ranks tp-innermost then cp, dp, pp.
    pl = place(tp=4, cp=1, dp=4, pp=4, devices_per_node=8)
    # TP ranks 0-3: one node
    assert (pl.tensor.size, pl.tensor.per_node, pl.tensor.nodes) == (4, 4, 1)
    # DP ranks 0, 4, 8, 12: two per node on two nodes -> crosses
    assert (pl.data.size, pl.data.per_node, pl.data.nodes) == (4, 2, 2)
    assert bool(pl.data.crosses_nodes)
    # PP ranks 0, 16, 32, 48: one per node
    assert (pl.pipeline.size, pl.pipeline.per_node, pl.pipeline.nodes) == (4, 1, 4)


def test_tp_larger_than_a_node_spans_nodes_and_straddling_groups_cross():
    big = group(size=16, stride=1, devices_per_node=8)
    assert (big.per_node, big.nodes) == (8, 2)
    odd = group(size=3, stride=1, devices_per_node=8)   # ranks 6, 7, 8 straddle the first node boundary
    assert bool(odd.crosses_nodes)
    inside = group(size=2, stride=4, devices_per_node=8)  # CP 2 after TP 4: ranks 0 and 4
    assert (inside.per_node, inside.nodes) == (2, 1)


def test_context_parallel_ranks_join_the_gradient_group():
    pl = place(tp=8, cp=2, dp=8, pp=8, devices_per_node=8)
    assert pl.gradient.size == 16          # dp x cp share weights
    assert pl.gradient.per_node == 1       # TP 8 fills the node
    assert pl.context.nodes == 2           # CP 2 after TP 8 spans two nodes


# ----------------------------------------------------------------------------- hand computation
def test_all_reduce_over_2_nodes_of_8_matches_the_hierarchical_model_by_hand():
    f = fabric("dgx-h100")
    nvlink, ib = hw.load_interconnect("nvlink4"), hw.load_interconnect("ib-ndr")
    g = group(size=16, stride=1, devices_per_node=8)
    size = GIB
    bus = min(450e9 * 0.82, 8 * 50e9 * 0.95 * 8 / 8)          # NVLink ring vs the node's 8 NICs
    bandwidth = 2 * 15 / 16 * size / bus
    ring = (2 * (16 - 2)) * nvlink.latency_s + 2 * (2 - 1) * ib.latency_s + bandwidth
    tree = 2 * ((8 - 1) * nvlink.latency_s + math.ceil(math.log2(2)) * ib.latency_s) + bandwidth
    assert float(collective_time("all_reduce", size, g, f)) == pytest.approx(min(ring, tree))
    assert tree < ring                     # NCCL's tree has the shorter latency across nodes


def test_nic_share_follows_ranks_per_node():
    # an 8-node data-parallel all-reduce with 8 ranks per node (TP 1) is bounded by NVLink (369 GB/s < the
    # node's 8 x 47.5); with 1 rank per node (TP 8) each group gets one of the node's 8 NICs
    # (rail-optimized), 47.5 GB/s: by hand, 2 (n-1)/n S / busbw
    f = fabric("dgx-h100")
    wide = float(collective_time("all_reduce", GIB, group(64, 1, 8), f))
    rail = float(collective_time("all_reduce", GIB, group(8, 8, 8), f))
    assert wide == pytest.approx(2 * 63 / 64 * GIB / (450e9 * 0.82), rel=0.02)   # + tree latency
    assert rail == pytest.approx(2 * 7 / 8 * GIB / (50e9 * 0.95), rel=0.01)


def test_tree_latency_grows_with_log_nodes_not_ranks():
    f = fabric("dgx-h100")
    small = [float(collective_time("all_reduce", 4096, group(8 * n, 1, 8), f)) for n in (2, 1024)]
    assert small[1] / small[0] < 6        # 512x the nodes: latency grows with log2, not 512x


def test_all_gather_latency_grows_linearly_with_ranks():
    f = fabric("dgx-h100")
    t = [float(collective_time("all_gather", 4096, group(8 * n, 1, 8), f)) for n in (2, 64)]
    assert t[1] / t[0] > 20               # ring only: (n - 1) steps


# ----------------------------------------------------------------------------- measured NCCL numbers
@pytest.mark.parametrize("size,measured_us", [(64 * MIB, 684.6), (1 * GIB, 8203.9), (16 * GIB, 127997)])
def test_8x_a100_all_reduce_matches_nccl_tests(size, measured_us):
    # hardware-facts.md 8.1: nccl-tests all_reduce_perf on 8x A100 (NVLink 3)
    t = float(collective_time("all_reduce", size, group(8, 1, 8), fabric("dgx-a100-80gb")))
    assert t == pytest.approx(measured_us * 1e-6, rel=0.25)


@pytest.mark.parametrize("size,measured_busbw", [(1 * GIB, 463.58), (16 * GIB, 482.26)])
def test_8x_h200_all_reduce_uses_nvlink_sharp(size, measured_busbw):
    # hardware-facts.md 8.2: all_reduce_bench.py on 8x H200, NCCL engages NVLS at large payloads
    t = float(collective_time("all_reduce", size, group(8, 1, 8), fabric("dgx-h200")))
    assert busbw("all_reduce", size, 8, t) == pytest.approx(measured_busbw * 1e9, rel=0.10)


@pytest.mark.parametrize("kind,measured", [("all_gather", 361.4), ("reduce_scatter", 362.9)])
def test_8x_h200_all_gather_and_reduce_scatter_ring(kind, measured):
    # hardware-facts.md 8.5: 16 GiB, ring
    t = float(collective_time(kind, 16 * GIB, group(8, 1, 8), fabric("dgx-h200")))
    assert busbw(kind, 16 * GIB, 8, t) == pytest.approx(measured * 1e9, rel=0.05)


def test_4_nodes_of_8_b200_all_reduce_is_bounded_by_the_nics():
    # hardware-facts.md 8.6: 4x P6-B200 (8x 50 GB/s NICs per node), 16 GiB all-reduce busbw 381.80 GB/s
    t = float(collective_time("all_reduce", 16 * GIB, group(32, 1, 8), fabric("dgx-b200")))
    assert busbw("all_reduce", 16 * GIB, 32, t) == pytest.approx(381.8e9, rel=0.05)


def test_single_rank_groups_cost_nothing():
    assert float(collective_time("all_reduce", GIB, group(1, 1, 8), fabric("dgx-h100"))) == 0.0
    assert np.all(collective_time("all_gather", GIB, group(np.array([1.0, 2.0]), 1, 8), fabric("dgx-h100"))
                  >= np.array([0.0, 1e-6]))


# ----------------------------------------------------------------------------- calibrated across nodes
TWO_NODE_PROFILE = """\
name: two-node-cpu
kind: device
description: a CPU calibrated with calibrate --comm --nnodes 2
memory_gib: {value: 16, source: "measured by simkit calibrate on testhost 2026-01-01"}
memory_bandwidth_gb_per_s: {value: 20, source: "measured by simkit calibrate on testhost 2026-01-01"}
peak_tflops:
  fp32: {value: 0.2, dense: true, source: "measured by simkit calibrate on testhost 2026-01-01"}
calibration:
  date: "2026-01-01T00:00:00Z"
  environment: {host: testhost, threads: 1}
  collectives:
    backend: gloo
    nproc: 2
    all_reduce:
      latency_us: 100.0
      bus_bandwidth_gb_per_s: 2.0
      points: [{bytes: 1000000, time_s_median: 0.0006}, {bytes: 100000000, time_s_median: 0.05}]
    inter_node:
      nnodes: 2
      nproc_per_node: 1
      nproc: 2
      all_reduce:
        latency_us: 400.0
        bus_bandwidth_gb_per_s: 0.5
        points: [{bytes: 1000000, time_s_median: 0.0025}, {bytes: 100000000, time_s_median: 0.2}]
"""


def test_a_plan_spanning_two_calibrated_nodes_uses_the_inter_node_measurement(write):
    from simkit.model.step import predict
    from simkit.plan import load_plan

    profile = write(TWO_NODE_PROFILE, "cal2n.yaml")
    device = hw.load_device(str(profile))
    assert device.calibration.collectives_inter["all_reduce"].nnodes == 2
    f = Fabric(device, None, None, 1, 1)
    size = 50e6
    across = float(collective_time("all_reduce", size, group(2, 1, 1), f))        # 1 rank on each of 2 nodes
    inside = float(collective_time("all_reduce", size, group(2, 1, 2), f))        # 2 ranks on one node
    # the measured points, interpolated: 2.5 ms + 49/99 of (200 - 2.5) ms across, 0.6 + ... inside
    assert across == pytest.approx(0.0025 + (size - 1e6) / 99e6 * (0.2 - 0.0025))
    assert inside == pytest.approx(0.0006 + (size - 1e6) / 99e6 * (0.05 - 0.0006))
    plan = {"model": {"n_layers": 2, "d_model": 256, "n_heads": 4, "vocab_size": 1000, "seq_len": 128},
            "training": {"global_batch_size": 2, "micro_batch_size": 1, "precision": "fp32"},
            "hardware": {"device": str(profile), "devices_per_node": 1, "nodes": 2}}
    two_nodes = predict(load_plan(plan))
    plan["hardware"] = {"device": str(profile), "devices_per_node": 2, "nodes": 1}
    one_node = predict(load_plan(plan))
    assert two_nodes.communication_s["data"]["total"] > 3 * one_node.communication_s["data"]["total"]
    assert any("spans 2 nodes" in note and "measured inter-node fit" in note for note in two_nodes.placement)
