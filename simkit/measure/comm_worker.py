"""One rank of the collective benchmark; started by torchrun (see simkit.measure.collectives).

Single node (what `simkit calibrate --comm --nproc N` runs):
    python -m torch.distributed.run --standalone --nproc_per_node N \\
        -m simkit.measure.comm_worker --output results.json

Across nodes, start the same command on every node with a shared rendezvous endpoint:
    torchrun --nnodes 2 --nproc_per_node 8 --node_rank <0|1> --rdzv-backend c10d \\
        --rdzv-endpoint <host-of-node-0>:29500 -m simkit.measure.comm_worker --output results.json
Rank 0 writes the JSON; `simkit.measure.collectives.summarize(json.load(...))` turns it into the
numbers of a profile's `calibration.collectives` section.

Every rank runs the same schedule; each sample is the slowest rank's time (a collective is done when
its last rank is), and rank decisions (calls per sample, when to stop) are agreed by an all-reduce
of MAX so ranks never disagree about how many collectives to issue.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import os
import time
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
    return parser.parse_args(argv)


class _Op:
    """Buffers and the call of one collective at one size; `check` verifies one result."""

    def __init__(self, op: str, size_bytes: int, world: int, rank: int, device: str, emulate_rs: bool):
        self.op, self.world, self.rank = op, world, rank
        total = size_bytes // 4 // world * world  # fp32 elements, divisible by the ranks
        chunk = total // world
        self.bytes = total * 4
        fill = float(rank + 1)
        self.algorithm = f"{op} (native {dist.get_backend()})"
        if op == "all_reduce":
            self.buf = torch.full((total,), fill, device=device)
            self.call: Callable[[], object] = lambda: dist.all_reduce(self.buf)
        elif op == "reduce_scatter":
            self.inp = torch.full((total,), fill, device=device)
            self.out = torch.empty(chunk, device=device)
            if emulate_rs or not _has_reduce_scatter():
                self.scratch = torch.empty(total, device=device)
                self.algorithm = "reduce_scatter emulated: all_to_all_single, then a local sum of the n received chunks"
                self.call = self._reduce_scatter_all_to_all
            else:
                self.call = lambda: _reduce_scatter(self.out, self.inp)
        else:
            self.inp = torch.full((chunk,), fill, device=device)
            self.out = torch.empty(total, device=device)
            self.call = lambda: _all_gather(self.out, self.inp)

    def _reduce_scatter_all_to_all(self) -> None:
        # Rank r receives chunk r of every rank's input, then sums them: (n-1)/n of the data crosses
        # the network per rank, as in a ring reduce-scatter.
        dist.all_to_all_single(self.scratch, self.inp)
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
    """gloo gained a flat-tensor reduce-scatter in recent torch; older builds raise on it."""
    backend = dist.get_backend()
    if backend != "gloo":
        return True
    try:
        _reduce_scatter(torch.empty(1), torch.zeros(dist.get_world_size()))
        return True
    except (RuntimeError, NotImplementedError, ValueError):
        return False


def _agree_max(*values: float) -> list[float]:
    """Element-wise MAX over ranks (every rank gets the same numbers)."""
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor.cpu().tolist()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(op: _Op, device: str, budget_s: float, args: argparse.Namespace) -> tuple[list[float], int]:
    """Seconds per call (slowest rank) for every sample, and calls per sample."""
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


def concurrent_matmul(times: list[float]) -> dict:
    """The profile entry from all blocks of `concurrent_matmul_times`: the median time of each rank,
    the slowest rank's (it sets the pace of a DDP step)."""
    m, n, k = CONCURRENT_GEMM
    median = sorted(times)[len(times) // 2]
    slowest = _agree_max(median)[0]
    return {"m": m, "n": n, "k": k, "dtype": "fp32", "flop_per_s_median": 2.0 * m * n * k / slowest,
            "samples": len(times)}


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    threads = args.threads or max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    torch.set_num_threads(threads)
    device = "cpu"
    if args.device == "cuda":
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    rank = dist.get_rank()
    ops, sizes = args.ops.split(","), [int(s) for s in args.sizes.split(",")]
    share = args.budget_s / (len(ops) * len(sizes))
    report = {"backend": dist.get_backend(), "nproc": world, "threads_per_worker": threads,
              "device": args.device, "torch_version": torch.__version__, "ops": {}}
    gemm_times = concurrent_matmul_times(device)
    for name in ops:
        points, algorithm = [], ""
        for size in sizes:
            op = _Op(name, size, world, rank, device, args.emulate_reduce_scatter)
            seconds, number = measure(op, device, share, args)
            points.append({"bytes": op.bytes, "seconds": seconds, "calls_per_sample": number})
            algorithm = op.algorithm
        report["ops"][name] = {"algorithm": algorithm, "points": points}
        gemm_times += concurrent_matmul_times(device)
    report["concurrent_matmul"] = concurrent_matmul(gemm_times)
    if rank == 0:
        tmp = f"{args.output}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(report, fh)
        os.replace(tmp, args.output)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
