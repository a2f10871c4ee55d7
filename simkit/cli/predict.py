"""`simkit predict`, `simkit sweep`, `simkit estimate`."""
from __future__ import annotations

import json

import click

from simkit.core.errors import SimkitError
from simkit.core.units import human_bytes, human_count, human_duration

SET_HELP = "Override a plan key, e.g. --set training.micro_batch_size=8 (repeatable)."


def _rows(rows: list[tuple[str, str]], indent: str = "") -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{indent}{k.ljust(width)}  {v}" for k, v in rows)


def _header(plan, pred) -> list[tuple[str, str]]:
    m, t, p, h = plan.model, plan.training, plan.parallelism, plan.hw
    model = (f"{m.n_layers} layers, d_model {m.d_model}, {m.n_heads} heads, d_ff {m.d_ff}, {m.mlp}, "
             f"seq_len {m.seq_len}, vocab {m.vocab_size} - {human_count(pred.parameters)} parameters")
    links = ", ".join(x for x in (plan.intra_node and f"intra-node {plan.intra_node.name}",
                                 plan.inter_node and f"inter-node {h.inter_node_links} x {plan.inter_node.name}") if x)
    hw = f"{plan.n_devices} x {plan.device.name} ({h.devices_per_node} per node x {h.nodes} node{'s' * (h.nodes > 1)})"
    parallel = f"data_parallel {p.data_parallel}, tensor_parallel {p.tensor_parallel}"
    if p.tensor_parallel > 1:
        parallel += (f" (sequence_parallel {str(p.sequence_parallel).lower()}, "
                     f"tp_comm_overlap {str(p.tp_comm_overlap).lower()})")
    parallel += f", pipeline_parallel {p.pipeline_parallel}"
    if p.virtual_pipeline_stages > 1:
        parallel += f" x {p.virtual_pipeline_stages} virtual stages (interleaved 1F1B)"
    parallel += f", context_parallel {p.context_parallel}, zero_stage {p.zero_stage}"
    train = (f"global batch {t.global_batch_size} = micro {t.micro_batch_size} x accum {t.grad_accum_steps} x "
             f"data_parallel {p.data_parallel}; {t.precision}, {t.optimizer}, checkpointing {t.activation_checkpointing}")
    return [("Plan", plan.source), ("Model", model), ("Hardware", hw + (f"; {links}" if links else "")),
            ("Parallelism", parallel), ("Training", train)]


def format_prediction(plan, pred) -> str:
    lo, hi = pred.step_time_interval_s
    out = [_rows(_header(plan, pred)), ""]
    epochs = plan.spec.data.epochs if plan.spec.data else 1
    interval = f"{pred.step_time_interval_coverage * 100:.0f} % interval {human_duration(lo)} - {human_duration(hi)}"
    summary = [("Step time", f"{human_duration(pred.step_time_s)}  ({interval})"),
               ("Throughput", f"{pred.samples_per_s:,.1f} samples/s, {pred.tokens_per_s:,.0f} tokens/s"),
               ("MFU", f"{pred.mfu * 100:.1f} %  (model FLOPs / (step time x devices x dense {plan.training.precision} peak))")]
    if pred.iterations_per_epoch is not None:
        summary += [("Iterations/epoch", f"{pred.iterations_per_epoch:,.0f}  (tokens / (global batch x seq_len))"),
                    ("Epoch time", human_duration(pred.epoch_time_s)),
                    (f"Total ({epochs:g} epoch{'s' * (epochs != 1)})", f"{human_duration(pred.total_time_s)}, "
                     f"{pred.device_hours:,.0f} device-hours" + (f", ${pred.cost_usd:,.0f}" if pred.cost_usd else ""))]
    out += [_rows(summary), "", "Step breakdown (seconds per optimizer step)"]
    out += _breakdown_lines(pred)
    out += _pipeline_lines(pred)
    out += _memory_lines(plan, pred)
    if pred.placement:
        out += ["", "Placement (Megatron order: tensor innermost, then context, data, pipeline)"]
        out += [f"  {note}" for note in pred.placement]
    for w in pred.warnings:
        out.append(f"warning: {w}")
    out += [f"assumed: {a}" for a in pred.assumptions]  # what the plan left out and simkit filled in
    return "\n".join(out)


_COMM_LABELS = {"tensor": "tensor-parallel collectives", "context": "context-parallel K/V ring",
                "pipeline": "pipeline sends", "data": "data-parallel gradients/weights"}


def _memory_lines(plan, pred) -> list[str]:
    cap, need = pred.memory_capacity_bytes, pred.memory_per_device_bytes
    verdict = (f"fits, {human_bytes(cap - need)} headroom" if pred.fits_in_memory
               else f"DOES NOT FIT, {human_bytes(need - cap)} over")
    out = ["", f"Memory per device: {human_bytes(need)} of {human_bytes(cap)} ({verdict})",
           f"  {'allocated peak':<38} {human_bytes(pred.memory_allocated_peak_bytes):>12}  (max_memory_allocated)"]
    for key, value in pred.memory_breakdown_bytes.items():
        out.append(f"    {key.replace('_', ' '):<36} {human_bytes(value):>12}")
    extra = pred.memory_reserved_peak_bytes - pred.memory_allocated_peak_bytes
    if extra > 0 or pred.memory_context_bytes > 0:
        out.append(f"  {'reserved peak':<38} {human_bytes(pred.memory_reserved_peak_bytes):>12}  "
                   f"(max_memory_reserved: + {human_bytes(extra)} caching allocator)")
        out.append(f"  {'CUDA context and workspaces':<38} {human_bytes(pred.memory_context_bytes):>12}")
    t = plan.training
    notes = [f"{t.master_weights} master weights", f"{t.cross_entropy} cross-entropy",
             f"{plan.model.kernels} kernels"]
    if pred.pipeline:
        notes.append(f"{pred.pipeline['in_flight_microbatches_first_stage']:.2f} micro-batches in flight on the "
                     "first pipeline stage")
    out.append(f"  ({', '.join(notes)})")
    if not pred.fits_in_memory:
        from simkit.search.advice import fit_advice

        advice = fit_advice(plan)
        if advice:
            out.append("  To fit, change one of:")
            out += [f"    {a.change:<58} {human_bytes(a.memory_per_device_bytes):>10}, step {human_duration(a.step_time_s)}"
                    for a in advice]
        else:
            out.append("  No single change of micro-batch, checkpointing, ZeRO stage, tensor or pipeline parallelism "
                       "makes it fit: add devices or combine changes")
    return out


def _breakdown_lines(pred) -> list[str]:
    b, step = pred.breakdown_s, pred.step_time_s
    labels = [("forward", "forward"), ("backward", "backward"), ("recompute", "recompute (checkpointing)"),
              ("optimizer", "optimizer step"), ("pipeline_bubble", "pipeline bubble (idle stages)"),
              ("communication_exposed", "communication, exposed"), ("other", "other (kernel launches not hidden)")]
    out = []
    for key, label in labels:
        share = b[key] / step * 100 if step else 0
        out.append(f"  {label:<38} {b[key]:>12.4f}  {share:5.1f} %")
        if key == "communication_exposed":
            for kind, times in pred.communication_s.items():
                if times["total"] > 0:
                    out.append(f"    {_COMM_LABELS[kind]:<36} {times['exposed']:>12.4f}  of {times['total']:.4f} s")
    out.append(f"  {'communication, total (incl. hidden)':<38} {b['communication_total']:>12.4f}")
    out.append(f"  {'step':<38} {step:>12.4f}")
    return out


def _pipeline_lines(pred) -> list[str]:
    pp = pred.pipeline
    if not pp:
        return []
    stages = pp["stages"]
    layers = (f"{pp['layers_first_stage']} layers on the first stage (+ embedding), {pp['layers_last_stage']} on "
              f"the last (+ LM head and loss)")
    if stages > 2:
        layers += f", up to {pp['layers_middle_stage']} on the {stages - 2} middle stages"
    schedule = "interleaved 1F1B" if pp["virtual_stages"] > 1 else "1F1B"
    formula = "(p-1)/(v m)" if pp["virtual_stages"] > 1 else "(p-1)/m"
    return ["", f"Pipeline: {stages} stages, {schedule}, {pp['microbatches']} micro-batches per step",
            f"  {layers}",
            f"  ideal bubble {formula} = {pp['bubble_fraction_ideal'] * 100:.1f} % of the compute; the first stage "
            f"holds {pp['in_flight_microbatches_first_stage']:.2f} micro-batches of activations in flight"]


@click.command("predict")
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def predict_cmd(plan_file, overrides, as_json):
    """Predict step time, throughput, MFU, epoch and total time, and memory per device of PLAN_FILE."""
    from simkit.plan import load_plan
    from simkit.model.step import predict

    plan = load_plan(plan_file, overrides)
    pred = predict(plan)
    if as_json:
        click.echo(json.dumps(pred.to_dict(), indent=2))
    else:
        click.echo(format_prediction(plan, pred))


@click.command("sweep")
@click.argument("plan_file", type=click.Path(dir_okay=False))
@click.option("--vary", "varies", multiple=True, required=True, metavar="KEY=V1,V2,...",
              help="A plan key and its values; every combination of all --vary options is predicted.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=SET_HELP)
@click.option("--output", "-o", type=click.Path(dir_okay=False),
              help="File to write: Parquet for .parquet, else CSV (default: print a table).")
def sweep_cmd(plan_file, varies, overrides, output):
    """Predict every combination of the varied keys of PLAN_FILE (vectorized); invalid rows get a reason."""
    import time

    import numpy as np

    from simkit.cli.progress import SWEEP_BAR_DELAY_S, bar, sweep_callback
    from simkit.cli.signals import interruptible
    from simkit.core.files import check_writable
    from simkit.report.columns import write_columns
    from simkit.search.sweep import sweep_columns

    if output:
        check_writable(output, "--output")  # before the sweep: a full disk or read-only folder is one line now
    t0 = time.perf_counter()
    with interruptible(f"{output} was not written (an earlier file there is untouched)" if output else "stopped"):
        with bar(0, "combinations", "predicting", delay_s=SWEEP_BAR_DELAY_S) as progress:
            columns = sweep_columns(plan_file, list(varies), tuple(overrides), progress=sweep_callback(progress))
        if output:
            write_columns(output, columns)
    elapsed = time.perf_counter() - t0
    rows, valid = len(columns["reason"]), int((columns["reason"] == "").sum())
    if output:
        click.echo(f"{rows:,} combinations ({valid:,} valid) in {elapsed:.2f} s -> {output}")
    else:
        import pandas as pd

        from simkit.report.terminal import render_frame

        fits = columns["fits_in_memory"]
        columns["fits_in_memory"] = np.where(np.ma.getmaskarray(fits), None, np.ma.getdata(fits)).astype(object)
        click.echo(render_frame(pd.DataFrame(columns), max_rows=60))
        click.echo(f"{rows:,} combinations ({valid:,} valid) in {elapsed:.2f} s")


@click.command("estimate")
@click.option("--params", type=float, required=True, help="Trainable parameters N, e.g. 7e9.")
@click.option("--tokens", type=float, required=True, help="Training tokens D, e.g. 1e12.")
@click.option("--device", required=True, help="Catalogue device, e.g. h100-sxm.")
@click.option("--devices", type=click.IntRange(min=1), required=True, help="Number of devices.")
@click.option("--mfu", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Model FLOPs utilization to assume (default 0.4).")
@click.option("--precision", default="bf16", show_default=True, help="Dtype whose dense peak applies.")
def estimate_cmd(params, tokens, device, devices, mfu, precision):
    """Quick answer: time = 6 x N x D / (devices x peak x MFU), with its assumptions."""
    from simkit.model.estimate import DEFAULT_MFU, estimate

    for name, value in (("--params", params), ("--tokens", tokens)):
        if not 0 < value <= 1e18:  # NaN fails too; beyond 1e18 the product overflows what is worth printing
            raise SimkitError(f"{value!r} must be a positive finite number, at most 1e+18", key=name)
    e = estimate(params=params, tokens=tokens, device=device, devices=devices,
                 mfu=DEFAULT_MFU if mfu is None else mfu, precision=precision)
    click.echo(_rows([
        ("Training compute", f"6 x N x D = 6 x {params:.3g} x {tokens:.3g} = {e.training_flop:.3g} FLOP"),
        ("Delivered rate", f"{devices} x {e.peak_flop_per_s / 1e12:,.0f} TFLOP/s ({device} dense {precision}) x MFU "
                           f"{e.mfu:.2f} = {devices * e.peak_flop_per_s * e.mfu / 1e15:,.2f} PFLOP/s"),
        ("Time", f"{human_duration(e.time_s)}  ({e.device_hours:,.0f} device-hours)"),
    ]))
    click.echo("\nAssumptions: 6 FLOP per parameter per token (forward 2, backward 4; Kaplan et al. 2020), "
               "attention FLOPs and activation recomputation ignored (recomputation adds ~33%), "
               f"MFU {'given' if mfu else 'assumed'} at {e.mfu:.2f}. For a step-level simulation use `simkit predict`.")
    click.echo("Note: the rule 'time = parameters x epochs / data size' is dimensionally wrong (it has units "
               "of parameters per token, not seconds); time grows with parameters x tokens, divided by the rate.")
