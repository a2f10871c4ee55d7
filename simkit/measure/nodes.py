"""The collective benchmark across nodes: torchrun with a c10d rendezvous, one launch per node.

On a cluster every node runs `simkit calibrate --comm --nnodes M --node-rank R --rdzv-endpoint
HOST:PORT`, which starts this node's torchrun (`NodeLaunch.node_ranks == (R,)`). Node 0 hosts the
rendezvous store at HOST:PORT (its own address); the others connect to it. Without --node-rank the
M nodes are simulated on this machine: M torchrun launches meet at 127.0.0.1 on a free port, which
tests the whole path but measures loopback, not a network.

torchrun's c10d rendezvous numbers the nodes in order of arrival (it ignores --node-rank, which only
the static backend uses), so every node's local rank 0 writes the report and each launch reads
its own. This module does not import torch.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from simkit.core.errors import SimkitError
from simkit.measure.collectives import _last_error, _stop, worker_command

LOOPBACK = "127.0.0.1"
RDZV_ID = "simkit-calibrate"
_ENDPOINT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):([0-9]{1,5})$")


@dataclass(frozen=True, kw_only=True, slots=True)
class NodeLaunch:
    """How this process takes part in a benchmark across nodes."""

    nnodes: int
    nproc_per_node: int
    node_ranks: tuple[int, ...]
    """The nodes this process starts: its own on a cluster, all of them on loopback."""
    endpoint: str
    """HOST:PORT of the c10d rendezvous; node 0 hosts it."""
    timeout_s: float
    """How long a node waits for the others: to reach or join the rendezvous, and in any one collective."""

    @property
    def loopback(self) -> bool:
        return len(self.node_ranks) > 1

    def describe(self) -> str:
        """One sentence for the profile and the CLI: how the ranks were started."""
        ranks = f"{self.nnodes} nodes x {self.nproc_per_node} rank{'s' if self.nproc_per_node != 1 else ''}"
        if self.loopback:
            return (f"{ranks} simulated on loopback: {self.nnodes} torchrun launches on this one machine, "
                    f"c10d rendezvous at {self.endpoint}; the inter-node numbers measure loopback, not a network")
        return f"{ranks}, one torchrun launch per node, c10d rendezvous at {self.endpoint}"


def parse_endpoint(text: str) -> tuple[str, int]:
    """'node0.cluster:29500' -> ('node0.cluster', 29500); IPv6 hosts in brackets."""
    match = _ENDPOINT.match(text or "")
    port = int(match.group(2)) if match else 0
    if not match or not 1 <= port <= 65535:
        raise SimkitError(f"{text!r} is not HOST:PORT with a port from 1 to 65535 (node 0's address and a free "
                          "port on it, e.g. node0.cluster:29500)", key="--rdzv-endpoint")
    return match.group(1), port


def loopback_endpoint() -> str:
    """127.0.0.1 and a port that is free now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return f"{LOOPBACK}:{sock.getsockname()[1]}"


def torchrun_args(launch: NodeLaunch, node_rank: int) -> list[str]:
    """torchrun's rendezvous flags for one node. is_host pins the store to node 0 (otherwise torchrun
    guesses from the hostname); join_timeout and read_timeout bound the wait for the other nodes."""
    timeout = max(1, round(launch.timeout_s))
    conf = f"is_host={int(node_rank == 0)},join_timeout={timeout},read_timeout={timeout}"
    args = ["--nnodes", str(launch.nnodes), "--nproc_per_node", str(launch.nproc_per_node), "--rdzv-backend", "c10d",
            "--rdzv-endpoint", launch.endpoint, "--rdzv-id", RDZV_ID, "--rdzv-conf", conf, "--max-restarts", "0"]
    # on loopback the workers meet at 127.0.0.1 too, whatever the hostname resolves to
    return args + (["--local-addr", LOOPBACK] if launch.loopback else [])


@dataclass
class _Node:
    rank: int
    process: subprocess.Popen
    output: Path
    log: Path


def run_nodes(launch: NodeLaunch, *, device: str, sizes: list[int], budget_s: float, cores: int,
              min_samples: int = 5, max_samples: int = 30, on_wait: Callable[[], None] = lambda: None,
              limit_s: float | None = None) -> dict:
    """Start the torchrun launches of `launch.node_ranks`, wait for all and return the report of the
    first of them (node 0's when it is among them). `budget_s` is the time for each section (within
    the node, across nodes); `limit_s` the wall time after which the launches are stopped (default:
    reaching and joining the rendezvous, 3x the budget, 2 minutes of start-up). Raises SimkitError
    naming the node that failed or hung; on any exception (Ctrl-C too) stops every launch."""
    sections = 2 if launch.nproc_per_node > 1 else 1
    if limit_s is None:
        limit_s = 2 * launch.timeout_s + 3 * sections * budget_s + 120
    worker = dict(device=device, sizes=sizes, budget_s=sections * budget_s, min_samples=min_samples,
                  max_samples=max_samples, threads=max(1, cores // (launch.nproc_per_node * len(launch.node_ranks))))
    try:
        return _launch(launch, worker, limit_s, on_wait)
    except _Aborted as aborted:
        if not launch.loopback:  # a cluster's other nodes would not relaunch with us
            raise aborted.error from None
    # gloo occasionally aborts a rank on loopback (SIGABRT; see collectives.run_workers): once more
    try:
        return _launch(replace(launch, endpoint=loopback_endpoint()), worker, limit_s, on_wait)
    except _Aborted as aborted:
        raise aborted.error from None


class _Aborted(Exception):
    """A rank was aborted (torchrun logs 'Signal 6 (SIGABRT) received by PID ...'); `error` says which node."""

    def __init__(self, error: SimkitError):
        super().__init__(str(error))
        self.error = error


def _launch(launch: NodeLaunch, worker: dict, limit_s: float, on_wait: Callable[[], None]) -> dict:
    threads = worker["threads"]
    with tempfile.TemporaryDirectory(prefix="simkit-nodes-") as tmp:
        nodes = []
        try:
            for rank in launch.node_ranks:
                output, log = Path(tmp) / f"node-{rank}.json", Path(tmp) / f"node-{rank}.log"
                command = worker_command(launch.nproc_per_node, str(output), **worker,
                                         launch=torchrun_args(launch, rank), timeout_s=launch.timeout_s)
                with open(log, "w", encoding="utf-8") as log_file:
                    process = subprocess.Popen(command, env=dict(os.environ, OMP_NUM_THREADS=str(threads)),
                                               stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
                nodes.append(_Node(rank, process, output, log))
            _wait_all(nodes, launch, limit_s, on_wait)
        except BaseException:
            for node in nodes:
                _stop(node.process)
            raise
        return json.loads(nodes[0].output.read_text(encoding="utf-8"))


def _wait_all(nodes: list[_Node], launch: NodeLaunch, limit_s: float, on_wait: Callable[[], None]) -> None:
    """Until every launch has exited 0; the first failure, or passing `limit_s`, raises."""
    began = time.monotonic()
    while True:
        for node in nodes:
            code = node.process.poll()
            if code is not None and (code != 0 or not node.output.exists()):
                log = _read(node.log)
                error = SimkitError(failure_message(node.rank, log, launch, code), key="--comm")
                raise _Aborted(error) if "(SIGABRT) received" in log else error
        if all(node.process.poll() == 0 for node in nodes):
            return
        if time.monotonic() - began > limit_s:
            running = next(node for node in nodes if node.process.poll() is None)
            raise SimkitError(timeout_message(running.rank, _read(running.log), launch, limit_s), key="--comm")
        on_wait()
        time.sleep(0.2)


def _read(log: Path) -> str:
    return log.read_text(encoding="utf-8", errors="replace")


def failure_message(node_rank: int, log: str, launch: NodeLaunch, code: int) -> str:
    """One sentence from a failed node's torchrun log: which node, and what it was doing."""
    timeout, last = f"{launch.timeout_s:g} s (--comm-timeout)", launch.nnodes - 1
    if "RendezvousTimeoutError" in log:
        return (f"node {node_rank}: the other nodes did not join the rendezvous at {launch.endpoint} within "
                f"{timeout}; start the same command on every node, with --node-rank 0 to {last}")
    if "RendezvousConnectionError" in log and node_rank == 0:
        return (f"node 0: could not host the rendezvous at {launch.endpoint}; the endpoint must be this "
                "machine's address and a free port")
    if "RendezvousConnectionError" in log:
        return (f"node {node_rank}: could not reach the rendezvous at {launch.endpoint} within {timeout}; "
                "start node 0 with the same --rdzv-endpoint (its own address)")
    errors = [line.split("simkit-comm error: ", 1)[1] for line in log.splitlines() if "simkit-comm error: " in line]
    if errors:
        return f"node {node_rank}: {errors[0]}"
    return f"node {node_rank}: the collective benchmark failed (torchrun exit {code}): {_last_error(log)}"


def timeout_message(node_rank: int, log: str, launch: NodeLaunch, limit_s: float) -> str:
    """One sentence for a node still running after `limit_s`: what its ranks last said they were doing."""
    said = [line.split("simkit-comm: ", 1)[1] for line in log.splitlines() if line.startswith("simkit-comm: ")]
    doing = f"last: {said[-1]}" if said else f"still at the rendezvous at {launch.endpoint}"
    return f"node {node_rank}: the collective benchmark took over {limit_s:.0f} s and was stopped ({doing})"
