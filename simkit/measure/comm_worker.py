"""One rank of the collective benchmark; started by torchrun (see simkit.measure.collectives).

Single node (what `simkit calibrate --comm --nproc N` runs):
    python -m torch.distributed.run --standalone --nproc_per_node N \\
        -m simkit.measure.comm_worker --output results.json

Across nodes (what `simkit calibrate --comm --nnodes M` runs), the same command on every node with a
shared rendezvous endpoint:
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint <host-of-node-0>:29500 \\
        -m simkit.measure.comm_worker --output results.json
Then every op and size is measured twice, one right after the other: within each node (a
`dist.new_group` per node; all nodes measure their own group at the same time) and over the world
group spanning the nodes; the JSON gains an `inter_node` part.

Local rank 0 of every node writes the JSON (all ranks hold the agreed numbers; torchrun's c10d
rendezvous numbers the nodes in order of arrival, so the node started as node 0 need not hold rank
0). `simkit.measure.collectives.summarize(json.load(...))` turns it into the numbers of a profile's
`calibration.collectives` section.

Every rank runs the same schedule; each sample is the slowest rank's time (a collective is done when
its last rank is), and rank decisions (calls per sample, when to stop) are agreed by an all-reduce
of MAX over the world group so ranks never disagree about how many collectives to issue. Each rank
prints what it is doing (`simkit-comm: rank R: ...`) and, on failure, one `simkit-comm error: ...`
line, so the launcher can say which rank stopped where.
"""
from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import math
import os
import sys
import time
import zlib
from dataclasses import dataclass
from typing import Callable

import torch
import torch.distributed as dist

OPS = ("all_reduce", "reduce_scatter", "all_gather")
# Recent torch names the flat-tensor collectives *_single; the *_tensor names warn as deprecated (2.13).
_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", required=True, help="JSON file rank 0 writes")
    parser.add_argument("--sizes", default="4096,65536,1048576,16777216,67108864",
                        help="comma-separated message sizes in bytes (nccl-tests 'size')")
    parser.add_argument("--ops", default=",".join(OPS))
    parser.add_argument("--budget-s", type=float, default=30.0, help="time for all ops and sizes together")
    parser.add_argument("--min-samples", type=int, default=5)
    parser.add_argument("--max-samples", type=int, default=30)
    parser.add_argument("--min-sample-s", type=float, default=2e-3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per rank (0: cores // ranks)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--emulate-reduce-scatter", action="store_true",
                        help="use all_to_all_single + local sum even where the backend has reduce_scatter")
    parser.add_argument("--timeout-s", type=float, default=1800.0,
                        help="seconds any one collective may wait for the other ranks (process-group timeout)")
    return parser.parse_args(argv)


@dataclass(frozen=True)
class Section:
    """The ranks one set of measurements runs over: this rank's group, its size and this rank's place in it."""

    name: str
    """'ops' (the node's own ranks, or the whole world on one node) or 'inter_node' (the world spanning nodes)."""
    group: object
    """The process group (None: the default world group)."""
    size: int
    rank: int
    label: str
    """For progress lines: 'within the node', 'across nodes'."""


class _Op:
    """Buffers and the call of one collective at one size in one group; `check` verifies one result."""

    def __init__(self, op: str, size_bytes: int, section: Section, device: str, emulate_rs: bool):
        self.op, self.world, self.rank, self.group = op, section.size, section.rank, section.group
        world = self.world
        total = size_bytes // 4 // world * world  # fp32 elements, divisible by the ranks
        chunk = total // world
        self.bytes = total * 4
        fill = float(self.rank + 1)
        self.algorithm = f"{op} (native {dist.get_backend()})"
        group = self.group
        if op == "all_reduce":
            self.buf = torch.full((total,), fill, device=device)
            self.call: Callable[[], object] = lambda: dist.all_reduce(self.buf, group=group)
        elif op == "reduce_scatter":
            self.inp = torch.full((total,), fill, device=device)
            self.out = torch.empty(chunk, device=device)
            if emulate_rs or not _has_reduce_scatter():
                self.scratch = torch.empty(total, device=device)
                self.algorithm = "reduce_scatter emulated: all_to_all_single, then a local sum of the n received chunks"
                self.call = self._reduce_scatter_all_to_all
            else:
                self.call = lambda: _reduce_scatter(self.out, self.inp, group=group)
        else:
            self.inp = torch.full((chunk,), fill, device=device)
            self.out = torch.empty(total, device=device)
            self.call = lambda: _all_gather(self.out, self.inp, group=group)

    def _reduce_scatter_all_to_all(self) -> None:
        # Rank r receives chunk r of every rank's input, then sums them: (n-1)/n of the data crosses
        # the network per rank, as in a ring reduce-scatter.
        dist.all_to_all_single(self.scratch, self.inp, group=self.group)
        torch.sum(self.scratch.view(self.world, -1), dim=0, out=self.out)

    def check(self) -> None:
        """Run once and verify the result, so a broken emulation cannot report a bandwidth."""
        self.call()
        everyone = self.world * (self.world + 1) / 2
        if self.op == "all_reduce":
            ok = bool(torch.all(self.buf == everyone))
            self.buf.zero_()  # in-place sums of non-zero data would overflow to inf over many calls
        elif self.op == "reduce_scatter":
            ok = bool(torch.all(self.out == everyone))
        else:
            expected = torch.arange(1, self.world + 1, device=self.out.device, dtype=self.out.dtype)
            ok = bool(torch.all(self.out.view(self.world, -1) == expected[:, None]))
        if not ok:
            raise RuntimeError(f"{self.algorithm} returned a wrong result at {self.bytes} bytes")


@functools.cache
def _has_reduce_scatter() -> bool:
    """gloo gained a flat-tensor reduce-scatter in recent torch; older builds raise on it. Probed on
    the world group (every rank reaches the first _Op at the same point of the schedule)."""
    backend = dist.get_backend()
    if backend != "gloo":
        return True
    try:
        _reduce_scatter(torch.empty(1), torch.zeros(dist.get_world_size()))
        return True
    except (RuntimeError, NotImplementedError, ValueError):
        return False


def _agree_max(*values: float, group=None) -> list[float]:
    """Element-wise MAX over the ranks of `group` (default: the world; every rank gets the same numbers)."""
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=group)
    return tensor.cpu().tolist()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(op: _Op, device: str, budget_s: float, args: argparse.Namespace) -> tuple[list[float], int]:
    """Seconds per call (slowest rank of the world) for every sample, and calls per sample. Barriers
    and agreement run over the world group, so with one group per node all nodes time their own
    group at the same moment and every rank follows the same schedule."""
    op.check()
    started = time.perf_counter()
    op.call()
    _sync(device)
    (per_call,) = _agree_max(time.perf_counter() - started)
    number = max(1, math.ceil(args.min_sample_s / max(per_call, 1e-9)))
    samples: list[float] = []
    began = time.perf_counter()
    while True:
        dist.barrier()
        started = time.perf_counter()
        for _ in range(number):
            op.call()
        _sync(device)
        elapsed_local = (time.perf_counter() - started) / number
        over = time.perf_counter() - began
        stop_vote = float(len(samples) + 1 >= args.max_samples
                          or (over >= budget_s and len(samples) + 1 >= args.min_samples)
                          or (over >= 2 * budget_s and len(samples) + 1 >= 3))
        seconds, stop = _agree_max(elapsed_local, stop_vote)
        samples.append(seconds)
        if stop:
            return samples, number


CONCURRENT_GEMM = (1024, 1024, 1024)


def concurrent_matmul_times(device: str, samples: int = 9) -> list[float]:
    """Seconds of one fp32 GEMM on this rank, `samples` times, while every rank multiplies at once:
    what a data-parallel worker gets when N workers share one machine's cores, caches and memory
    bandwidth. `main` takes such a block before the collectives and after each of them, so the
    result spans the whole run instead of one moment of it."""
    m, n, k = CONCURRENT_GEMM
    a, b = torch.randn(m, k, device=device), torch.randn(k, n, device=device)
    c = torch.empty(m, n, device=device)
    for _ in range(3):
        torch.matmul(a, b, out=c)
    _sync(device)
    dist.barrier()
    times = []
    for _ in range(samples):
        began = time.perf_counter()
        torch.matmul(a, b, out=c)
        _sync(device)
        times.append(time.perf_counter() - began)
    return times


def concurrent_matmul(times: list[float], group=None) -> dict:
    """The profile entry from all blocks of `concurrent_matmul_times`: the median time of each rank,
    the slowest rank's of `group` (it sets the pace of a DDP step; across nodes: this node's ranks,
    since the profile describes the node that writes it)."""
    m, n, k = CONCURRENT_GEMM
    median = sorted(times)[len(times) // 2]
    slowest = _agree_max(median, group=group)[0]
    return {"m": m, "n": n, "k": k, "dtype": "fp32", "flop_per_s_median": 2.0 * m * n * k / slowest,
            "samples": len(times)}


class _Status:
    """What this rank is doing, printed as it changes (the launcher's log names the step that hung)."""

    def __init__(self, rank: int):
        self.rank, self.doing = rank, "starting"

    def say(self, doing: str) -> None:
        self.doing = doing
        print(f"simkit-comm: rank {self.rank}: {doing}", flush=True)

    def failed(self, exc: BaseException) -> None:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        print(f"simkit-comm error: rank {self.rank} failed while {self.doing}: "
              f"{type(exc).__name__}: {first}", file=sys.stderr, flush=True)


def _node_sections(world: int, rank: int, device: str) -> tuple[Section, Section, int]:
    """(this node's section, the world section, nodes) when the world spans nodes.
    Node membership comes from torchrun's GROUP_RANK; every rank creates every node's group in the
    same order (dist.new_group requires it)."""
    group_rank = torch.tensor([int(os.environ.get("GROUP_RANK", 0))], dtype=torch.int64, device=device)
    everyone = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(world)]
    dist.all_gather(everyone, group_rank)
    node_of = [int(t.item()) for t in everyone]
    nodes = sorted(set(node_of))
    members = [[r for r in range(world) if node_of[r] == node] for node in nodes]
    if len({len(m) for m in members}) != 1:
        raise RuntimeError(f"the nodes run different numbers of ranks ({[len(m) for m in members]}); "
                           "start every node with the same --nproc")
    mine = node_of[rank]
    local = None
    for node, ranks in zip(nodes, members):
        group = dist.new_group(ranks)
        if node == mine:
            local = Section("ops", group, len(ranks), ranks.index(rank), "within the node")
    world_section = Section("inter_node", None, world, rank, "across nodes")
    return local, world_section, len(nodes)


def _check_same_settings(args: argparse.Namespace) -> None:
    """Every rank must run the same schedule; a node started with other sizes or budgets would hang
    the others, so compare a checksum of the settings that shape it (MAX and -MAX agree iff equal)."""
    shape = f"{args.sizes}|{args.ops}|{args.budget_s}|{args.min_samples}|{args.max_samples}|{args.min_sample_s}"
    checksum = float(zlib.crc32(shape.encode()))
    high, neg_low = _agree_max(checksum, -checksum)
    if high != -neg_low:
        raise RuntimeError("the nodes were started with different settings (sizes, budget or samples: "
                           "--quick on some nodes only?); start the same command on every node")


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    threads = args.threads or max(1, (os.cpu_count() or 1) // local_world)
    torch.set_num_threads(threads)
    device = "cpu"
    if args.device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    status = _Status(int(os.environ.get("RANK", 0)))
    try:
        status.say("joining the process group")
        dist.init_process_group("nccl" if args.device == "cuda" else "gloo",
                                timeout=dt.timedelta(seconds=args.timeout_s))
        report = _run(args, world, local_world, threads, device, status)
    except Exception as exc:
        status.failed(exc)
        raise
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:
        tmp = f"{args.output}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(report, fh)
        os.replace(tmp, args.output)
    dist.destroy_process_group()


def _run(args: argparse.Namespace, world: int, local_world: int, threads: int, device: str,
         status: _Status) -> dict:
    """Every measurement of this rank; the report every node's local rank 0 writes."""
    rank = dist.get_rank()
    ops, sizes = args.ops.split(","), [int(s) for s in args.sizes.split(",")]
    multinode = world > local_world
    if multinode:
        status.say("comparing settings with the other nodes")
        _check_same_settings(args)
        local, across, nnodes = _node_sections(world, rank, device)
        # one rank per node: its group has no collective to measure
        sections = ([local] if local.size > 1 else []) + [across]
    else:
        local = Section("ops", None, world, rank, "")
        sections = [local]
    share = args.budget_s / (len(sections) * len(ops) * len(sizes))
    report = {"backend": dist.get_backend(), "nproc": local_world if multinode else world,
              "threads_per_worker": threads, "device": args.device, "torch_version": torch.__version__, "ops": {}}
    results: dict[str, dict] = {s.name: {} for s in sections}
    gemm_times = concurrent_matmul_times(device)
    for name in ops:
        points: dict[str, list] = {s.name: [] for s in sections}
        algorithm: dict[str, str] = {}
        for size in sizes:
            for section in sections:  # within and across nodes back to back: both see one machine state
                status.say(f"measuring {name} of {size} bytes {section.label}".rstrip())
                op = _Op(name, size, section, device, args.emulate_reduce_scatter)
                seconds, number = measure(op, device, share, args)
                points[section.name].append({"bytes": op.bytes, "seconds": seconds, "calls_per_sample": number})
                algorithm[section.name] = op.algorithm
        for section in sections:
            results[section.name][name] = {"algorithm": algorithm[section.name], "points": points[section.name]}
        status.say("timing the concurrent GEMM")
        gemm_times += concurrent_matmul_times(device)
    report["ops"] = results.get("ops", {})
    report["concurrent_matmul"] = concurrent_matmul(gemm_times, group=local.group if multinode else None)
    if multinode:
        report["inter_node"] = {"nnodes": nnodes, "nproc_per_node": local_world, "nproc": world,
                                "ops": results["inter_node"]}
    status.say("done")
    return report


if __name__ == "__main__":
    main()
