"""`simkit report PLAN --output report.html`: one self-contained HTML page about a plan (prediction with
its interval, breakdown, memory and scaling plots, the hardware and its provenance, the model's measured
accuracy for that kind of hardware, and the commands that reproduce it)."""
from __future__ import annotations

import datetime as dt
import shlex
from pathlib import Path

import click

from simkit.core.errors import SimkitError


@click.command("report")
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a plan key (repeatable).")
@click.option("--nodes", "nodes_text", metavar="N1,N2,...",
              help="Node counts of the scaling curve [default: powers of 2 up to 8x the plan's nodes, at least 8].")
@click.option("--scale-batch", is_flag=True, help="Scaling curve with the global batch growing with the nodes.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="HTML file to write [default: <plan>-report.html].")
def report_cmd(plan_file, overrides, nodes_text, scale_batch, output):
    """Write one HTML page about PLAN_FILE that opens in any browser without a network: the prediction,
    where the step time and the memory go, how it scales over node counts, the hardware and where its
    numbers come from, how accurate simkit has been on such hardware, and the commands to reproduce it."""
    from simkit import __version__
    from simkit.core.yamlio import write_atomic
    from simkit.model.step import predict
    from simkit.model.uncertainty import coverage, known_errors, profile_kind
    from simkit.plan import load_plan
    from simkit.report.html import ReportInputs, report_page
    from simkit.search.scaling import default_nodes, parse_nodes

    out = Path(output or f"{Path(plan_file).stem}-report.html")
    plan = load_plan(plan_file, overrides)
    pred = predict(plan)
    nodes = parse_nodes(nodes_text) if nodes_text else default_nodes(plan.hw.nodes)
    kind = profile_kind(plan.device)
    inputs = ReportInputs(plan=plan, prediction=pred, plan_file=plan_file, plan_text=_read(plan_file),
                          overrides=overrides, accuracy={"kind": kind, "coverage": coverage(), **known_errors()[kind]},
                          version=__version__, generated_utc=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
                          profile_text=_read(plan.device.path) if plan.device.calibration is not None else None)
    inputs.images = _step_images(plan_file, plan, pred)
    _add_scaling(inputs, plan_file, nodes, overrides, scale_batch)
    if plan.device.calibration is not None:
        from simkit.report import figures
        from simkit.report.plot_hardware import hardware_figure

        inputs.images["hardware"] = figures.png_bytes(hardware_figure(plan.device))
    inputs.commands = _commands(plan_file, overrides, nodes_text, scale_batch, output, plan)
    try:
        write_atomic(out, report_page(inputs))
    except OSError as exc:
        raise SimkitError(f"cannot write the report: {exc.strerror or exc}", file=str(out)) from None
    click.echo(f"wrote {out}: {len(inputs.images)} plots, {out.stat().st_size / 1024:,.0f} KiB; open it in a browser")


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SimkitError(f"cannot read the file: {exc.strerror or exc}", file=str(path)) from None


def _step_images(plan_file: str, plan, pred) -> dict[str, bytes]:
    from simkit.report import figures, plot_step

    stem = Path(plan_file).stem
    breakdown = plot_step.breakdown_figure([(stem, pred.breakdown_s)],
                                           title=f"step time breakdown on {plan.n_devices} x {plan.device.name}")
    memory = plot_step.memory_figure([(stem, pred.memory_breakdown_bytes)], pred.memory_capacity_bytes,
                                     title=f"memory per device ({plan.device.name})")
    return {"breakdown": figures.png_bytes(breakdown), "memory": figures.png_bytes(memory)}


def _add_scaling(inputs, plan_file: str, nodes: list[int], overrides, scale_batch: bool) -> None:
    from simkit.cli.plot import scaling_curve
    from simkit.report import figures
    from simkit.report.plot_scaling import scaling_figure

    plan = inputs.plan
    batch = "grows with the nodes (weak scaling)" if scale_batch else \
        f"stays at {plan.training.global_batch_size} sequences (strong scaling)"
    try:
        table = scaling_curve(plan_file, nodes, overrides, scale_batch)
    except SimkitError as exc:
        inputs.scaling_note = f"No scaling curve: {exc}"
        return
    inputs.scaling_note = (f"The plan predicted on {', '.join(map(str, nodes))} nodes of {plan.hw.devices_per_node} "
                           f"devices; the model-parallel layout stays as the plan has it, data_parallel and "
                           f"grad_accum_steps follow the devices, the global batch {batch}. Efficiency is "
                           "throughput per device relative to the smallest node count that fits in memory.")
    inputs.scaling_rows = [{k: (None if isinstance(v, float) and v != v else v) for k, v in row.items()}
                           for row in table.to_dict("records")]
    inputs.images["scaling"] = figures.png_bytes(scaling_figure(table, mark_devices=plan.n_devices))


def _commands(plan_file, overrides, nodes_text, scale_batch, output, plan) -> list[str]:
    sets = [arg for o in overrides for arg in ("--set", o)]
    nodes = ["--nodes", nodes_text] if nodes_text else []
    weak = ["--scale-batch"] if scale_batch else []
    cmds = [["simkit", "predict", plan_file, *sets],
            ["simkit", "report", plan_file, *sets, *nodes, *weak, "--output", output or f"{Path(plan_file).stem}-report.html"],
            ["simkit", "plot", "breakdown", plan_file, *sets, "-o", "breakdown.png"],
            ["simkit", "plot", "memory", plan_file, *sets, "-o", "memory.png"],
            ["simkit", "plot", "scaling", plan_file, *sets, *nodes, *weak, "-o", "scaling.png"]]
    if plan.device.calibration is not None:
        cmds.append(["simkit", "hardware", "plot", plan.device.path, "-o", "hardware.png"])
    return [shlex.join(c) for c in cmds]
