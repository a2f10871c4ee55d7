"""`simkit optimize`: the top configurations of a plan on given hardware, as a table and a paragraph, or as
JSON, CSV or Parquet for scripts."""
from __future__ import annotations

import json

import click

from simkit.core.units import human_bytes, human_duration


def _rows(result, price) -> list[dict]:
    """One dict per top configuration: its settings and metrics in SI units."""
    rows = []
    for c in result.top:
        pred = c.prediction
        loss, share = c.main_loss()
        hours = pred.total_time_s * c.devices / 3600 if pred.total_time_s is not None else None
        rows.append({"rank": c.rank, "tied": c.tied, **c.settings, "step_time_s": pred.step_time_s,
                     "tokens_per_s": pred.tokens_per_s, "mfu": pred.mfu,
                     "memory_per_device_bytes": pred.memory_per_device_bytes,
                     "headroom_bytes": pred.memory_capacity_bytes - pred.memory_per_device_bytes,
                     "total_time_s": pred.total_time_s, "device_hours": hours,
                     "cost_usd": hours * price if (hours is not None and price) else None,
                     "main_loss": loss, "main_loss_share": share})
    return rows


def _table(result, rows: list[dict], price) -> str:
    varied = [k for k in result.varied_choices if k not in ("parallelism.zero_stage", "training.activation_checkpointing",
                                                             "parallelism.sequence_parallel")]
    head = ["rank", "TP", "SP", "PP", "VP", "CP", "DP", "mb", "GA", "ZeRO", "AC"] + [k.split(".")[1] for k in varied] + \
        ["step", "tokens/s", "MFU", "mem/device", "headroom", "to train", "cost" if price else "device-h", "main loss"]
    lines = [head]
    for r in rows:
        tp = r["parallelism.tensor_parallel"]
        cost = (f"${r['cost_usd']:,.0f}" if r["cost_usd"] is not None else "-") if price else \
            (f"{r['device_hours']:,.0f}" if r["device_hours"] is not None else "-")
        lines.append([f"{r['rank']}{'=' if r['tied'] else ''}", str(tp),
                      ("on" if r["parallelism.sequence_parallel"] else "off") if tp > 1 else "-",
                      str(r["parallelism.pipeline_parallel"]), str(r["parallelism.virtual_pipeline_stages"]),
                      str(r["parallelism.context_parallel"]), str(r["parallelism.data_parallel"]),
                      str(r["training.micro_batch_size"]), str(r["training.grad_accum_steps"]),
                      str(r["parallelism.zero_stage"]), str(r["training.activation_checkpointing"])]
                     + [str(r.get(k)) for k in varied]
                     + [human_duration(r["step_time_s"]), f"{r['tokens_per_s']:,.0f}", f"{r['mfu'] * 100:.1f} %",
                        human_bytes(r["memory_per_device_bytes"]),
                        f"{r['headroom_bytes'] / (r['headroom_bytes'] + r['memory_per_device_bytes']) * 100:.0f} %",
                        human_duration(r["total_time_s"]) if r["total_time_s"] is not None else "-", cost,
                        f"{r['main_loss']} {r['main_loss_share'] * 100:.0f} %"])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(line, widths)))
                     for line in lines)


def _summary(result) -> str:
    return (f"{result.searched:,} configurations searched ({result.valid:,} valid, {result.fitting:,} fit in "
            f"{human_bytes(result.usable_bytes)} per device, {result.headroom * 100:.0f} % headroom) in "
            f"{result.elapsed_s:.2f} s on {result.devices} devices; objective: {result.objective}. Ranks sharing a "
            f"number (=) are ties: closer than the model's {result.tie_tolerance * 100:.0f} % uncertainty.")


@click.command("optimize")
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option("--devices", type=int, help="Devices to lay the model out on (a multiple of the devices per node).")
@click.option("--nodes", type=int, help="Nodes to lay the model out on (instead of --devices).")
@click.option("--objective", type=click.Choice(["time", "cost", "time-to-train"]), default="time", show_default=True,
              help="time: tokens per second; cost: device-hours; time-to-train: the plan's tokens.")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True, help="Configurations to show.")
@click.option("--fix", multiple=True, metavar="KEY=V", help="Hold a plan key at one value, e.g. parallelism.zero_stage=1.")
@click.option("--allow", multiple=True, metavar="KEY=V1,V2,...",
              help="The values a plan key may take, e.g. training.precision=bf16,fp8 or training.global_batch_size=512,1024.")
@click.option("--headroom", type=float, default=0.10, show_default=True,
              help="Share of device memory to leave free.")
@click.option("--price", type=float, help="USD per device-hour (default: the device file's price, if any).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a plan key before searching.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of the table.")
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the top configurations: .parquet or CSV.")
def optimize_cmd(plan_file, devices, nodes, objective, top, fix, allow, headroom, price, overrides, as_json, output):
    """Search every valid layout of PLAN_FILE and show the fastest (or cheapest) that fit in memory."""
    from simkit.cli.signals import interruptible
    from simkit.core.files import check_writable
    from simkit.search.optimize import optimize

    if output:
        check_writable(output, "--output")  # before the search: a read-only folder is one line now
    with interruptible(f"{output} was not written (an earlier file there is untouched)" if output else "stopped"):
        result = optimize(plan_file, devices=devices, nodes=nodes, objective=objective, top=top, fix=fix,
                          allow=allow, headroom=headroom, overrides=overrides)
        price = price or (result.top[0].plan.device.price_per_hour_usd if result.top else None)
        rows = _rows(result, price)
        if output:
            import numpy as np

            from simkit.report.columns import write_columns

            keys = list(dict.fromkeys(k for r in rows for k in r))
            columns = {k: np.array([r.get(k) for r in rows], dtype=object if k in ("main_loss",) or
                                   any(isinstance(r.get(k), str) or r.get(k) is None for r in rows) else None)
                       for k in keys}
            write_columns(output, columns)
    if as_json:
        click.echo(json.dumps({"objective": objective, "devices": result.devices, "searched": result.searched,
                               "valid": result.valid, "fitting": result.fitting, "elapsed_s": result.elapsed_s,
                               "tie_tolerance": result.tie_tolerance, "top": rows,
                               "explanation": result.explanation}, indent=2, default=str))
        return
    click.echo(_table(result, rows, price))
    click.echo("")
    click.echo(_summary(result))
    click.echo("")
    click.echo(result.explanation)
    if output:
        click.echo(f"-> {output}")
