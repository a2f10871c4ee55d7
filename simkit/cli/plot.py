"""`simkit plot breakdown|memory|scaling|accuracy`: pictures of a prediction, a sweep, a plan over node
counts and of the model's accuracy, as PNG or SVG (by the file's extension). Each command prints what it
wrote and the numbers behind the picture."""
from __future__ import annotations

from pathlib import Path

import click

from simkit.core.errors import SimkitError
from simkit.report import figures, tables
from simkit.report.terminal import render_table

SET_HELP = "Override a plan key, e.g. --set training.micro_batch_size=8 (repeatable)."


def _output_option(kind: str):
    return click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
                        help=f"Image to write, .png or .svg [default: <plan>-{kind}.png].")


def _output(output: str | None, plan_file: str | None, kind: str) -> Path:
    path = Path(output) if output else Path(f"{Path(plan_file).stem if plan_file else 'simkit'}-{kind}.png")
    return figures.check_output(path)


def _predict(plan_file: str, overrides: tuple[str, ...]):
    from simkit.model.step import predict
    from simkit.plan import load_plan

    plan = load_plan(plan_file, overrides)
    return plan, predict(plan)


@click.group("plot")
def plot_cmd() -> None:
    """Draw a prediction (breakdown, memory), a plan over node counts (scaling) or the model's accuracy
    against measurements (accuracy) as PNG or SVG. `simkit hardware plot PROFILE` draws a calibrated
    profile; `simkit report PLAN` puts the pictures of a plan into one HTML page."""


@plot_cmd.command("breakdown")
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option("--vary", "varies", multiple=True, metavar="KEY=V1,V2,...",
              help="Sweep these plan keys (as `simkit sweep`) and draw one bar per valid configuration.")
@click.option("--top", type=click.IntRange(1), default=15, show_default=True,
              help="With --vary: draw the fastest N configurations.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@_output_option("breakdown")
def breakdown_cmd(plan_file, varies, top, overrides, output):
    """Stacked bars of where the step time goes (forward, backward, recompute, optimizer, pipeline bubble,
    exposed communication, other): for PLAN_FILE, or for every configuration of a sweep (--vary)."""
    from simkit.report import plot_step

    path = _output(output, plan_file, "breakdown")
    if varies:
        from simkit.search.sweep import parse_vary, run_sweep

        from simkit.cli.progress import SWEEP_BAR_DELAY_S, bar, sweep_callback

        with bar(0, "combinations", "predicting", delay_s=SWEEP_BAR_DELAY_S) as progress:
            frame = run_sweep(plan_file, list(varies), tuple(overrides), progress=sweep_callback(progress))
        keys = [parse_vary(v)[0] for v in varies]
        items = plot_step.sweep_items(frame, keys, top=top)
        if not items:
            raise SimkitError(f"none of the {len(frame)} configurations is valid; see `simkit sweep` for the reasons")
        valid = int((frame["reason"] == "").sum())
        title = (f"{Path(plan_file).stem}: the {len(items)} fastest of {valid} valid configurations\n"
                 f"{plot_step.key_legend(keys)}").rstrip()
    else:
        plan, pred = _predict(plan_file, overrides)
        items = [(Path(plan_file).stem, pred.breakdown_s)]
        title = f"{Path(plan_file).stem}: step time breakdown on {plan.n_devices} x {plan.device.name}"
    figures.save_figure(plot_step.breakdown_figure(items, title=title), path)
    click.echo(f"wrote {path}: step time breakdown of {len(items)} configuration{'s' * (len(items) > 1)}")
    parts = plot_step.step_parts()
    rows = [{"label": label, **{p: b.get(p) for p in parts}, "step": sum(b.get(p, 0.0) for p in parts)}
            for label, b in items]
    click.echo(render_table(rows, [("label", "configuration", tables.plain)]
                            + [(p, figures.label_of(p), tables.seconds) for p in parts]
                            + [("step", "step", tables.seconds)]))


@plot_cmd.command("memory")
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@_output_option("memory")
def memory_cmd(plan_file, overrides, output):
    """Memory per device of PLAN_FILE by kind (weights, gradients, optimizer states, activations, buffers)
    against the device's capacity."""
    from simkit.core.units import human_bytes
    from simkit.report import plot_step

    path = _output(output, plan_file, "memory")
    plan, pred = _predict(plan_file, overrides)
    title = f"{Path(plan_file).stem}: memory per device ({plan.device.name})"
    figures.save_figure(plot_step.memory_figure([(Path(plan_file).stem, pred.memory_breakdown_bytes)],
                                                pred.memory_capacity_bytes, title=title), path)
    verdict = "fits" if pred.fits_in_memory else "does NOT fit"
    click.echo(f"wrote {path}: {human_bytes(pred.memory_per_device_bytes)} per device of "
               f"{human_bytes(pred.memory_capacity_bytes)} ({verdict})")


@plot_cmd.command("scaling")
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option("--nodes", "nodes_text", metavar="N1,N2,...",
              help="Node counts to predict [default: powers of 2 up to 8x the plan's nodes, at least 8].")
@click.option("--scale-batch", is_flag=True,
              help="Grow the global batch with the nodes (weak scaling) instead of keeping the plan's.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@_output_option("scaling")
def scaling_cmd(plan_file, nodes_text, scale_batch, overrides, output):
    """Throughput (tokens/s) and scaling efficiency of PLAN_FILE against the number of devices, with the
    ideal line, swept over node counts. data_parallel and grad_accum_steps follow the devices; the
    model-parallel layout stays as the plan has it."""
    from simkit.plan import load_plan
    from simkit.report import plot_scaling
    from simkit.search.scaling import default_nodes, parse_nodes

    path = _output(output, plan_file, "scaling")
    plan = load_plan(plan_file, overrides)
    nodes = parse_nodes(nodes_text) if nodes_text else default_nodes(plan.hw.nodes)
    table = scaling_curve(plan_file, nodes, overrides, scale_batch)
    batch = "grows with the nodes" if scale_batch else f"fixed at {plan.training.global_batch_size}"
    fig = plot_scaling.scaling_figure(table, mark_devices=plan.n_devices,
                                      title=f"{Path(plan_file).stem} on {plan.device.name}: global batch {batch}")
    figures.save_figure(fig, path)
    click.echo(f"wrote {path}: {int((table['reason'] == '').sum())} of {len(table)} node counts valid")
    click.echo(scaling_text(table))


def scaling_curve(plan_file, nodes, overrides, scale_batch):
    """`search.scaling.scaling_table`, refused with a sentence when no node count is valid."""
    from simkit.search.scaling import scaling_table

    table = scaling_table(plan_file, nodes, tuple(overrides), scale_batch=scale_batch)
    if not (table["reason"] == "").any():
        raise SimkitError(f"no node count in {','.join(map(str, nodes))} gives a valid plan: "
                          + "; ".join(sorted(set(table["reason"]))), file=str(plan_file))
    return table


def scaling_text(table) -> str:
    rows = [{k: (None if v != v else v) for k, v in row.items()} for row in table.to_dict("records")]
    for row in rows:
        row["fits"] = None if row["reason"] else ("yes" if row["fits_in_memory"] else "NO")
        row["reason"] = row["reason"] or None
    count = lambda x: "-" if x is None else f"{x:,.0f}"  # noqa: E731
    return render_table(rows, [("nodes", "nodes", str), ("devices", "devices", count),
                               ("global_batch_size", "global batch", count), ("tokens_per_s", "tokens/s", count),
                               ("step_time_s", "step", tables.seconds),
                               ("scaling_efficiency", "efficiency", lambda x: tables.percent(x, signed=False)),
                               ("fits", "fits", tables.plain), ("reason", "why not", tables.plain)])


@plot_cmd.command("accuracy")
@click.option("--published", "published", multiple=True, type=click.Path(dir_okay=False),
              help="Published-cases file (as `validate --published`); repeatable.")
@click.option("--record", "records", multiple=True, type=click.Path(dir_okay=False),
              help="A `validate --record` file of runs measured here; repeatable.")
@click.option("--band", type=click.FloatRange(0, 1, min_open=True), default=0.10, show_default=True,
              help="Half-width of the shaded band around predicted = measured, as a fraction.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default="accuracy.png", show_default=True,
              help="Image to write, .png or .svg.")
def accuracy_cmd(published, records, band, output):
    """Predicted against measured step time, one colour per source, with the +/-band: published
    measurements (--published) and your own runs recorded by `simkit validate --record` (--record)."""
    from simkit.report import plots

    if not published and not records:
        raise SimkitError("give --published FILE and/or --record FILE (written by `simkit validate --record`)")
    path = figures.check_output(output)
    points = []
    if published:
        from simkit.validate.published import load_published_files, score_published

        points += plots.published_points(score_published(load_published_files(list(published))))
    for record in records:
        points += plots.record_points(record)
    if not points:
        raise SimkitError("no measured step times in the given files")
    figures.save_figure(plots.predicted_vs_measured_figure(points, band=band,
                                                           title="simkit: predicted vs measured step time"), path)
    inside = sum(abs(p["predicted"] - p["measured"]) <= band * p["measured"] for p in points)
    click.echo(f"wrote {path}: {len(points)} runs, {inside} ({100 * inside / len(points):.0f}%) within "
               f"±{100 * band:g}%")
