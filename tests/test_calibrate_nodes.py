"""`simkit calibrate --comm --nnodes M`: collectives within a node and across nodes.

Real runs use two 'nodes' of one rank each on loopback with tiny sizes and budgets (each about 10 s,
mostly torchrun start-up); the 2-ranks-per-node case, the waits and the messages use a worker JSON
or a stand-in process instead."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("torch")

from simkit.cli.calibrate import calibrate_cmd  # noqa: E402
from simkit.core.errors import SimkitError  # noqa: E402
from simkit.hardware import load_device  # noqa: E402
from simkit.measure import calibrate as cal  # noqa: E402
from simkit.measure import nodes  # noqa: E402
from simkit.measure.collectives import bus_factor, summarize  # noqa: E402

TINY_PLAN = """
import simkit.measure.calibrate as cal
from simkit.measure.attention import AttentionShape

def tiny_plan(settings, cache_bytes, memory_bytes):
    return cal.Plan(gemm_sizes=(16, 16), dtypes=("fp32",), bandwidth_sizes=(64 * 1024,),
                    attention_shapes=(AttentionShape(batch=1, heads=1, seq_len=16, head_dim=16, dtype="fp32"),),
                    comm_sizes=(4096, 65536),
                    seconds={"matmul": 0.05, "bandwidth": 0.05, "attention": 0.05, "collectives": %s},
                    min_samples=3, max_samples=%d, max_warmup_s=0.0, min_sample_s=1e-4)
"""
namespace: dict = {}
exec(TINY_PLAN % ("0.3", 3), namespace)
tiny_plan = namespace["tiny_plan"]


def raw_report(seconds_within: float = 1e-3, seconds_across: float = 4e-3) -> dict:
    """A worker JSON of 2 nodes x 2 ranks: every size takes the given time within / across the nodes."""
    def ops(seconds: float) -> dict:
        return {op: {"algorithm": f"{op} (native gloo)",
                     "points": [{"bytes": size, "seconds": [seconds * size / 2**20] * 3, "calls_per_sample": 1}
                                for size in (2**20, 2**24)]}
                for op in ("all_reduce", "reduce_scatter", "all_gather")}
    return {"backend": "gloo", "nproc": 2, "threads_per_worker": 1, "device": "cpu", "torch_version": "x",
            "ops": ops(seconds_within),
            "concurrent_matmul": {"m": 1024, "n": 1024, "k": 1024, "dtype": "fp32", "flop_per_s_median": 5e10,
                                  "samples": 36},
            "inter_node": {"nnodes": 2, "nproc_per_node": 2, "nproc": 4, "ops": ops(seconds_across)}}


# ----------------------------------------------------------------------------- the worker's report
def test_summarize_fits_each_section_over_its_own_ranks():
    result = summarize(raw_report(), launch="2 nodes x 2 ranks, one torchrun launch per node")
    assert result.nproc == 2 and result.inter_node.nproc == 4 and result.inter_node.nnodes == 2
    assert result.inter_node.nproc_per_node == 2
    within, across = result.ops["all_reduce"].points[0], result.inter_node.ops["all_reduce"].points[0]
    # 1 MiB in 1 ms over 2 ranks: busbw = algbw * 2(n-1)/n = algbw; in 4 ms over 4 ranks: x 1.5
    assert within.busbw_bytes_per_s == pytest.approx(2**20 / 1e-3 * bus_factor("all_reduce", 2))
    assert across.busbw_bytes_per_s == pytest.approx(2**20 / 4e-3 * 1.5)
    # time proportional to size: no latency, bandwidth the one of the points
    fit = result.inter_node.ops["all_gather"]
    assert fit.latency_s == pytest.approx(0, abs=1e-9)
    assert fit.bus_bandwidth_bytes_per_s == pytest.approx(2**20 / 4e-3 * 0.75)


def test_summarize_of_one_rank_per_node_has_no_intra_node_fits():
    raw = raw_report()
    raw.update(nproc=1, ops={})
    raw["inter_node"].update(nproc_per_node=1, nproc=2)
    result = summarize(raw)
    assert result.ops == {} and set(result.inter_node.ops) == {"all_reduce", "reduce_scatter", "all_gather"}


def test_profile_and_history_carry_both_sections(monkeypatch, tmp_path):
    """2 nodes x 2 ranks from a worker JSON (no processes started): the profile parses into both fits."""
    monkeypatch.setattr(cal, "default_plan", tiny_plan)
    monkeypatch.setattr(nodes, "run_nodes", lambda launch, **kwargs: raw_report())
    out, history = tmp_path / "cal.yaml", tmp_path / "history.jsonl"
    res = CliRunner().invoke(calibrate_cmd, ["--device", "cpu", "--threads", "1", "--comm", "--nproc", "2",
                                             "--nnodes", "2", "--output", str(out), "--history", str(history)])
    assert res.exit_code == 0, res.output
    calibration = load_device(str(out)).calibration
    intra, inter = calibration.collectives["all_reduce"], calibration.collectives_inter["all_reduce"]
    assert (intra.nproc, intra.nnodes, inter.nproc, inter.nnodes) == (2, 1, 4, 2)
    assert intra.bus_bandwidth_bytes_per_s == pytest.approx(2**20 / 1e-3, rel=1e-3)
    assert inter.bus_bandwidth_bytes_per_s == pytest.approx(2**20 / 4e-3 * 1.5, rel=1e-3)
    assert [size for size, _ in inter.points] == [2**20, 2**24]
    assert "nproc_per_node: 2" in out.read_text()
    # the summary shows both all-reduce fits side by side
    rows = [line.split()[:7] for line in res.output.splitlines() if line.startswith("all-reduce busbw")]
    assert rows == [["all-reduce", "busbw", "GB/s", "(fit,", "1", "node", "x"],
                    ["all-reduce", "busbw", "GB/s", "(fit,", "2", "nodes", "x"]]
    assert "all-reduce latency us (fit, 2 nodes x 2)" in res.output
    assert "simulated on loopback" in res.output
    record = json.loads(history.read_text().splitlines()[-1])
    assert record["settings"]["nnodes"] == 2
    assert {"all_reduce.busbw.1MiB", "inter_node.all_reduce.busbw.1MiB", "inter_node.all_gather.busbw.16MiB"} \
        <= set(record["benchmarks"])


# ----------------------------------------------------------------------------- real runs on loopback
def test_two_loopback_nodes_write_the_inter_node_fits(monkeypatch, tmp_path):
    monkeypatch.setattr(cal, "default_plan", tiny_plan)
    out = tmp_path / "cal.yaml"
    res = CliRunner().invoke(calibrate_cmd, ["--device", "cpu", "--threads", "2", "--comm", "--nproc", "1",
                                             "--nnodes", "2", "--output", str(out), "--no-history"])
    assert res.exit_code == 0, res.output
    calibration = load_device(str(out)).calibration
    assert calibration.collectives == {}  # one rank per node: nothing within a node
    inter = calibration.collectives_inter
    assert set(inter) == {"all_reduce", "reduce_scatter", "all_gather"}
    assert all(fit.nproc == 2 and fit.nnodes == 2 and fit.backend == "gloo" for fit in inter.values())
    assert [size for size, _ in inter["all_reduce"].points] == [4096, 65536]
    assert calibration.raw["collectives"]["inter_node"]["nproc_per_node"] == 1
    assert "simulated on loopback" in calibration.raw["method"]["inter_node"]
    assert "collectives: 2 nodes x 1 rank simulated on loopback: 2 torchrun launches on this one machine" \
        in res.output
    assert "note: one rank per node: nothing to measure within a node" in res.output


def _script(tmp_path: Path, budget: str = "0.3", max_samples: int = 3) -> Path:
    script = tmp_path / "calibrate.py"
    script.write_text(TINY_PLAN % (budget, max_samples) + textwrap.dedent("""
        import sys
        cal.default_plan = tiny_plan
        sys.argv = ["simkit", "calibrate", *sys.argv[1:]]
        from simkit.cli import main
        main()
    """))
    return script


def test_two_commands_node_1_takes_part_and_writes_nothing(tmp_path):
    script, endpoint = _script(tmp_path), nodes.loopback_endpoint()
    common = ["--device", "cpu", "--threads", "1", "--comm", "--nproc", "1", "--nnodes", "2",
              "--rdzv-endpoint", endpoint, "--comm-timeout", "60"]
    node1 = subprocess.Popen([sys.executable, str(script), *common, "--node-rank", "1", "--output",
                              str(tmp_path / "node1.yaml"), "--history", str(tmp_path / "node1.jsonl")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    node0 = subprocess.run([sys.executable, str(script), *common, "--node-rank", "0", "--output",
                            str(tmp_path / "node0.yaml"), "--no-history"], capture_output=True, text=True, timeout=120)
    stdout1, stderr1 = node1.communicate(timeout=60)
    assert node0.returncode == 0, node0.stderr
    assert node1.returncode == 0, stderr1
    assert stdout1 == ("node 1 of 2: took part in the collective benchmark (1 process here); node 0 writes the "
                       "profile, nothing was written on this node\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calibrate.py", "node0.yaml"]
    inter = load_device(str(tmp_path / "node0.yaml")).calibration.collectives_inter
    assert inter["all_reduce"].nproc == 2 and inter["all_reduce"].nnodes == 2
    assert f"one torchrun launch per node, c10d rendezvous at {endpoint}" in node0.stdout


def test_nodes_started_with_different_settings_refuse_to_measure(tmp_path):
    endpoint = nodes.loopback_endpoint()
    common = ["--device", "cpu", "--threads", "1", "--comm", "--nproc", "1", "--nnodes", "2",
              "--rdzv-endpoint", endpoint, "--comm-timeout", "60", "--no-history"]
    (tmp_path / "other").mkdir()
    node1 = subprocess.Popen([sys.executable, str(_script(tmp_path / "other", budget="0.5")), *common,
                              "--node-rank", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    node0 = subprocess.run([sys.executable, str(_script(tmp_path)), *common, "--node-rank", "0", "--output",
                            str(tmp_path / "cal.yaml")], capture_output=True, text=True, timeout=120)
    _, stderr1 = node1.communicate(timeout=60)
    assert (node0.returncode, node1.returncode) == (2, 2)
    # c10d numbers the ranks in order of arrival: either node may hold rank 0
    assert re.fullmatch(
        r"error: --comm: node 0: rank [01] failed while comparing settings with the other nodes: RuntimeError: the "
        r"nodes were started with different settings \(sizes, budget or samples: --quick on some nodes only\?\); "
        r"start the same command on every node", node0.stderr.splitlines()[-1])
    assert re.match(r"error: --comm: node 1: rank [01] failed while comparing settings", stderr1.splitlines()[-1])
    assert not (tmp_path / "cal.yaml").exists()


def test_a_node_alone_times_out_at_the_rendezvous(monkeypatch, tmp_path):
    monkeypatch.setattr(cal, "default_plan", tiny_plan)
    endpoint = nodes.loopback_endpoint()
    res = CliRunner().invoke(calibrate_cmd, [
        "--device", "cpu", "--comm", "--nproc", "1", "--nnodes", "2", "--node-rank", "0", "--rdzv-endpoint",
        endpoint, "--comm-timeout", "1", "--output", str(tmp_path / "cal.yaml"), "--no-history"])
    assert res.exit_code != 0
    assert isinstance(res.exception, SimkitError)
    assert str(res.exception) == (
        f"--comm: node 0: the other nodes did not join the rendezvous at {endpoint} within 1 s (--comm-timeout); "
        "start the same command on every node, with --node-rank 0 to 1")
    assert not (tmp_path / "cal.yaml").exists()


def _worker_processes(marker: str) -> list[int]:
    """Pids of processes whose command line mentions `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the workers through /proc")
def test_sigterm_stops_every_node_and_writes_nothing(tmp_path):
    script = _script(tmp_path, budget="30", max_samples=1000)
    out, scratch = tmp_path / "cal.yaml", tmp_path / "scratch"
    out.write_text("earlier profile\n")
    scratch.mkdir()
    process = subprocess.Popen([sys.executable, str(script), "--device", "cpu", "--threads", "1", "--comm",
                                "--nproc", "1", "--nnodes", "2", "--output", str(out), "--no-history"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=dict(os.environ, TMPDIR=str(scratch)))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        logs = list(scratch.glob("simkit-nodes-*/node-*.log"))
        if len(logs) == 2 and all("measuring" in log.read_text() for log in logs):
            break
        time.sleep(0.2)
    assert len(_worker_processes(str(scratch))) >= 4  # two torchrun agents and their workers
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr  # 128 + SIGTERM
    assert stderr.splitlines()[-1] == f"interrupted: {out} was not written (an earlier file there is untouched)"
    assert out.read_text() == "earlier profile\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cal.yaml", "calibrate.py", "scratch"]
    assert _worker_processes(str(scratch)) == []


# ----------------------------------------------------------------------------- waits and messages
LAUNCH = nodes.NodeLaunch(nnodes=2, nproc_per_node=4, node_ranks=(1,), endpoint="node0.cluster:29500",
                          timeout_s=300)


def test_a_hung_node_is_stopped_and_named_with_what_it_was_doing(monkeypatch, tmp_path):
    hang = ("import time; print('simkit-comm: rank 5: measuring all_reduce of 4096 bytes across nodes', flush=True); "
            "time.sleep(60)")
    monkeypatch.setattr(nodes, "worker_command", lambda *args, **kwargs: [sys.executable, "-c", hang])
    began = time.monotonic()
    with pytest.raises(SimkitError) as error:
        nodes.run_nodes(LAUNCH, device="cpu", sizes=[4096], budget_s=1, cores=1, limit_s=2)
    assert str(error.value) == ("--comm: node 1: the collective benchmark took over 2 s and was stopped "
                                "(last: rank 5: measuring all_reduce of 4096 bytes across nodes)")
    assert time.monotonic() - began < 30


@pytest.mark.parametrize("log, message", [
    ("torch.distributed.elastic.rendezvous.api.RendezvousTimeoutError\n",
     "node 1: the other nodes did not join the rendezvous at node0.cluster:29500 within 300 s (--comm-timeout); "
     "start the same command on every node, with --node-rank 0 to 1"),
    ("torch.distributed.elastic.rendezvous.api.RendezvousConnectionError: The connection to the C10d store "
     "has failed.\n",
     "node 1: could not reach the rendezvous at node0.cluster:29500 within 300 s (--comm-timeout); start node 0 "
     "with the same --rdzv-endpoint (its own address)"),
    ("simkit-comm: rank 5: measuring all_gather of 65536 bytes within the node\n"
     "simkit-comm error: rank 5 failed while measuring all_gather of 65536 bytes within the node: RuntimeError: "
     "Connection reset by peer\nTraceback (most recent call last):\nRuntimeError: Connection reset by peer\n",
     "node 1: rank 5 failed while measuring all_gather of 65536 bytes within the node: RuntimeError: "
     "Connection reset by peer"),
    ("something went wrong\nValueError: bad\n", "node 1: the collective benchmark failed (torchrun exit 1): "
                                                "ValueError: bad"),
])
def test_a_failed_node_is_named_with_the_cause(log, message):
    assert nodes.failure_message(1, log, LAUNCH, 1) == message


def test_node_0_that_cannot_host_the_rendezvous_says_so():
    assert nodes.failure_message(0, "RendezvousConnectionError\n", LAUNCH, 1) == (
        "node 0: could not host the rendezvous at node0.cluster:29500; the endpoint must be this machine's "
        "address and a free port")


def test_torchrun_flags_of_a_node():
    args = nodes.torchrun_args(LAUNCH, 1)
    assert args == ["--nnodes", "2", "--nproc_per_node", "4", "--rdzv-backend", "c10d", "--rdzv-endpoint",
                    "node0.cluster:29500", "--rdzv-id", "simkit-calibrate", "--rdzv-conf",
                    "is_host=0,join_timeout=300,read_timeout=300", "--max-restarts", "0"]
    loopback = nodes.NodeLaunch(nnodes=2, nproc_per_node=1, node_ranks=(0, 1), endpoint="127.0.0.1:1234",
                                timeout_s=5)
    assert nodes.torchrun_args(loopback, 0)[-6:] == ["--rdzv-conf", "is_host=1,join_timeout=5,read_timeout=5",
                                                     "--max-restarts", "0", "--local-addr", "127.0.0.1"]


@pytest.mark.parametrize("text, parsed", [("node0.cluster:29500", ("node0.cluster", 29500)),
                                          ("10.0.0.1:1", ("10.0.0.1", 1)), ("[fe80::1]:29500", ("[fe80::1]", 29500))])
def test_endpoints(text, parsed):
    assert nodes.parse_endpoint(text) == parsed


def test_an_aborted_loopback_launch_is_started_once_more(monkeypatch, tmp_path):
    """gloo occasionally aborts a rank on loopback: the nodes are relaunched once, on a new port."""
    started = tmp_path / "started"
    abort = ("import sys; open(sys.argv[1], 'a').write(sys.argv[2] + '\\n'); "
             "print('Signal 6 (SIGABRT) received by PID 1'); sys.exit(1)")

    def command(*args, launch, **kwargs):  # records the rendezvous endpoint of each launch, then aborts
        return [sys.executable, "-c", abort, str(started), launch[launch.index("--rdzv-endpoint") + 1]]

    monkeypatch.setattr(nodes, "worker_command", command)
    loopback = nodes.NodeLaunch(nnodes=2, nproc_per_node=1, node_ranks=(0, 1), endpoint="127.0.0.1:1", timeout_s=5)
    with pytest.raises(SimkitError, match=r"^--comm: node \d: the collective benchmark failed \(torchrun exit 1\)"):
        nodes.run_nodes(loopback, device="cpu", sizes=[4096], budget_s=1, cores=1)
    endpoints = set(started.read_text().split())
    assert len(endpoints) == 2 and "127.0.0.1:1" in endpoints  # a second launch, on a new port
    started.unlink()
    with pytest.raises(SimkitError):
        nodes.run_nodes(replace(LAUNCH, node_ranks=(0,)), device="cpu", sizes=[4096], budget_s=1, cores=1)
    assert started.read_text() == "node0.cluster:29500\n"  # on a cluster the other nodes would not follow


# ----------------------------------------------------------------------------- flags
ENDPOINT_HELP = "(node 0's address and a free port on it, e.g. node0.cluster:29500)"


@pytest.mark.parametrize("args, message", [
    (["--nnodes", "2"], "--nnodes: --nnodes only applies with --comm"),
    (["--node-rank", "0"], "--node-rank: --node-rank only applies with --comm"),
    (["--comm", "--node-rank", "0"], "--node-rank: --node-rank only applies with --nnodes 2 or more"),
    (["--comm", "--nnodes", "0"], "--nnodes: 0 must be at least 1"),
    (["--comm", "--nnodes", "2", "--nproc", "0"], "--nproc: 0 must be at least 1"),
    (["--comm", "--nnodes", "2", "--node-rank", "2", "--rdzv-endpoint", "127.0.0.1:29500"],
     "--node-rank: 2 is out of range for --nnodes 2 (0 to 1)"),
    (["--comm", "--nnodes", "2", "--node-rank", "-1", "--rdzv-endpoint", "127.0.0.1:29500"],
     "--node-rank: -1 is out of range for --nnodes 2 (0 to 1)"),
    (["--comm", "--nnodes", "2", "--node-rank", "1"],
     "--node-rank: needs --rdzv-endpoint HOST:PORT (node 0's address, the same on every node)"),
    (["--comm", "--nnodes", "2", "--rdzv-endpoint", "127.0.0.1:29500"],
     "--rdzv-endpoint: needs --node-rank (this node's rank, 0 to 1); without both, the nodes are simulated "
     "on loopback"),
    (["--comm", "--nnodes", "2", "--node-rank", "0", "--rdzv-endpoint", "node0"],
     f"--rdzv-endpoint: 'node0' is not HOST:PORT with a port from 1 to 65535 {ENDPOINT_HELP}"),
    (["--comm", "--nnodes", "2", "--node-rank", "0", "--rdzv-endpoint", "node0:70000"],
     f"--rdzv-endpoint: 'node0:70000' is not HOST:PORT with a port from 1 to 65535 {ENDPOINT_HELP}"),
    (["--comm", "--nnodes", "2", "--comm-timeout", "0"],
     "--comm-timeout: 0 must be a positive number of seconds"),
])
def test_bad_node_flags_are_one_line_and_exit_2(args, message, tmp_path):
    from simkit.cli import cli

    res = CliRunner().invoke(cli, ["calibrate", "--device", "cpu", "--output", str(tmp_path / "c.yaml"), *args])
    assert res.exit_code == 2
    assert res.output == f"error: {message}\n"
    assert not (tmp_path / "c.yaml").exists()

