"""`simkit calibrate`: measure this machine, write a calibrated device profile, append to history."""
from __future__ import annotations

import sys

import click

from simkit.measure.calibrate import (CalibrationResult, Settings, catalogue_device, check_settings, history_record,
                                     join_collectives, profile_text, run, summary_rows)
from simkit.cli.signals import interruptible
from simkit.core.errors import SimkitError
from simkit.core.files import check_writable, write_atomic


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class _Bar:
    """tqdm on stderr: what is being measured, elapsed against the planned seconds, time left."""

    def __init__(self):
        from tqdm import tqdm

        self.bar = tqdm(total=1, unit="s", file=sys.stderr, dynamic_ncols=True,
                        bar_format="{desc:<38} {percentage:3.0f}%|{bar}| {elapsed} elapsed{postfix}")

    def __call__(self, what: str, elapsed_s: float, planned_s: float) -> None:
        if what == "done":  # finished early or late: the bar ends full either way
            planned_s = elapsed_s
        self.bar.total = max(planned_s, elapsed_s, 1.0)
        self.bar.n = elapsed_s
        self.bar.set_description_str(what, refresh=False)
        self.bar.set_postfix_str(f"~{max(planned_s - elapsed_s, 0):.0f} s left", refresh=False)
        self.bar.refresh()

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()


@click.command("calibrate")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default=None,
              help="Device to measure [default: cuda if available, else cpu].")
@click.option("--quick", is_flag=True, help="Short run (at most about a minute): fewer shapes and samples.")
@click.option("--threads", type=int, default=None, help="torch threads [default: all cores this process may use].")
@click.option("--comm", is_flag=True, help="Also measure collectives (all-reduce, reduce-scatter, all-gather).")
@click.option("--nproc", type=int, default=None, help="Processes for --comm, per node [default: 2].")
@click.option("--nnodes", type=int, default=None,
              help="Nodes for --comm: measure collectives within each node and across the nodes. Run the same "
                   "command on every node with --node-rank and --rdzv-endpoint; without them the nodes are "
                   "simulated on this machine (loopback) [default: 1].")
@click.option("--node-rank", type=int, default=None,
              help="This node's rank, 0 to NNODES-1; node 0 writes the profile, the others only take part.")
@click.option("--rdzv-endpoint", default=None, metavar="HOST:PORT",
              help="Where the nodes meet: node 0's address and a free port on it, the same on every node.")
@click.option("--comm-timeout", type=float, default=None,
              help="Seconds any one collective waits for the other ranks (with --nnodes also: a node for the "
                   "others to join); a rank that crashes or hangs is then named with what it was doing "
                   "[default: 300].")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Profile to write [default: calibrated-<device>.yaml].")
@click.option("--history", "history_path", type=click.Path(dir_okay=False), default=None,
              help="History store to append to [default: $SIMKIT_HISTORY, else ~/.local/share/simkit/history.jsonl].")
@click.option("--no-history", is_flag=True, help="Do not append a record to the history store.")
def calibrate_cmd(device, quick, threads, comm, nproc, nnodes, node_rank, rdzv_endpoint, comm_timeout, output,
                  history_path, no_history):
    """Measure matmul, memory bandwidth, attention (and with --comm collectives) on this machine and
    write a calibrated device profile usable as `hardware.device: <file>` in a plan.

    Interrupting (Ctrl-C, SIGTERM) writes nothing: an earlier profile at --output stays as it was."""
    device = device or _default_device()
    settings = _settings(device, quick, threads, comm, nproc=nproc, nnodes=nnodes, node_rank=node_rank,
                         rdzv_endpoint=rdzv_endpoint, comm_timeout_s=comm_timeout)
    output = output or f"calibrated-{device}.yaml"
    check_settings(settings)  # before the progress bar: a bad setting is one line, no empty bar
    if settings.multinode and settings.node_rank:
        _join(settings)
        return
    check_writable(output, "--output")  # a full disk or a read-only folder is found now, not after the run
    if not no_history:
        _check_history(history_path)
    with interruptible(f"{output} was not written (an earlier file there is untouched)"):
        with _Bar() as bar:
            result = run(settings, on_progress=bar)
        write_atomic(output, profile_text(result))
    _print_summary(result, output)
    if not no_history:
        _append_history(result, history_path)


def _settings(device: str, quick: bool, threads: int | None, comm: bool, **comm_flags) -> Settings:
    """Settings from the flags; a --comm flag without --comm (or a node flag without --nnodes 2+) is an error."""
    from simkit.measure import cpu_count

    flags = {name: value for name, value in comm_flags.items() if value is not None}
    for name in flags:
        flag = "--" + name.removesuffix("_s").replace("_", "-")
        if not comm:
            raise SimkitError(f"{flag} only applies with --comm", key=flag)
        if name not in ("nproc", "nnodes", "comm_timeout_s") and flags.get("nnodes", 1) < 2:
            raise SimkitError(f"{flag} only applies with --nnodes 2 or more", key=flag)
    return Settings(device=device, quick=quick, threads=threads if threads is not None else cpu_count(), comm=comm,
                    **flags)


def _join(settings: Settings) -> None:
    """Node 1.. of a run across nodes: the collective benchmark only; nothing is written here."""
    with interruptible(f"node {settings.node_rank} stopped its torchrun launch"):
        with _Bar() as bar:
            join_collectives(settings, on_progress=bar)
    processes = f"{settings.nproc} process{'es' if settings.nproc != 1 else ''}"
    click.echo(f"node {settings.node_rank} of {settings.nnodes}: took part in the collective benchmark ({processes} "
               "here); node 0 writes the profile, nothing was written on this node")


def _check_history(path: str | None) -> None:
    """The history store can be appended to (its folder is created as appending would)."""
    try:
        from simkit.track.history import resolve_path
    except ModuleNotFoundError:
        return
    target = resolve_path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SimkitError(f"cannot write: {exc.strerror}", file=str(target), key="--history") from None
    check_writable(target, "--history")


def _print_summary(result: CalibrationResult, output: str) -> None:
    catalogue = catalogue_device(result)
    reference = f"catalogue {catalogue.name}" if catalogue is not None else "catalogue"
    click.echo(f"wrote {output} ({result.settings.device}, {result.settings.threads} threads, "
               f"{result.elapsed_s:.0f} s)")
    rows = summary_rows(result, catalogue)
    width = max([32] + [len(quantity) for quantity, _, _ in rows])
    click.echo(f"{'':{width}} {'measured':>12} {reference:>18} {'ratio':>7}")
    for quantity, measured, reference_value in rows:
        ref = f"{reference_value:18.4g}" if reference_value else f"{'-':>18}"
        ratio = f"{measured / reference_value:7.0%}" if reference_value else f"{'-':>7}"
        click.echo(f"{quantity:{width}} {measured:12.4g} {ref} {ratio}")
    if catalogue is not None and catalogue.name == "cpu":
        click.echo("note: the catalogue 'cpu' entry is a placeholder, not this machine's datasheet")
    extrapolated = sum(r.extrapolated for r in result.matmul)
    if extrapolated:
        click.echo(f"note: {extrapolated} GEMM shape(s) did not fit the time budget and were extrapolated "
                   "from smaller shapes (marked extrapolated: true in the profile)")
    if result.collectives is not None:
        _print_collective_notes(result.collectives)
    for warning in result.warnings:
        click.echo(f"note: {warning}")


def _print_collective_notes(c) -> None:
    inter = c.inter_node
    if inter is not None:
        click.echo(f"collectives: {c.launch}")
        if not c.ops:
            click.echo(f"note: one rank per node: nothing to measure within a node; only the {inter.nnodes}-node "
                       "fits (calibration.collectives.inter_node) were written")
    fits = [(op, fit, op) for op, fit in c.ops.items()]
    fits += [(f"inter-node {op}", fit, f"inter_node.{op}") for op, fit in (inter.ops.items() if inter else ())]
    for name, fit, key in fits:
        if fit.fit_max_relative_error > 0.25:
            click.echo(f"note: the {name} latency/bandwidth fit misses a measured size by up to "
                       f"{fit.fit_max_relative_error:.0%} (per-size times: calibration.collectives.{key}.points)")


def _append_history(result: CalibrationResult, path: str | None) -> None:
    try:
        from simkit.track.history import append_record, resolve_path
    except ModuleNotFoundError as exc:
        if exc.name != "simkit.track.history":
            raise
        click.echo("note: history not recorded (simkit.history is not available in this version)", err=True)
        return
    record_id = append_record(history_record(result), path)
    click.echo(f"history: appended record {record_id} to {resolve_path(path)}")
