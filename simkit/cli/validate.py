"""`simkit validate`: predictions held against real training on this machine (one plan or a folder of
plans) or against a file of published measurements."""
from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path

import click

from simkit.cli import progress
from simkit.cli.signals import interruptible
from simkit.core.errors import SimkitError
from simkit.core.files import append_line, check_writable
from simkit.core.units import human_bytes
from simkit.report import figures, plots, tables, terminal

_BREAKDOWN_COLUMNS = [("part", "part", tables.plain), ("predicted_s", "predicted", tables.seconds),
                      ("measured_s", "measured", tables.seconds), ("error", "error", tables.percent),
                      ("error_of_step", "off by (of step)", tables.percent)]
_SUITE_COLUMNS = [("name", "plan", tables.plain), ("shape", "dp x mb x ga, precision", tables.plain),
                  ("predicted", "predicted", tables.seconds), ("measured", "measured", tables.seconds),
                  ("iqr", "IQR", tables.seconds), ("fastest", "fastest", tables.seconds), ("error", "error", tables.percent),
                  ("machine", "machine", lambda x: "-" if x is None else f"{x:.2f}x"), ("worst_part", "most off", tables.plain),
                  ("memory", "peak memory pred / meas", tables.plain), ("memory_error", "memory error", tables.percent)]


@click.command("validate")
@click.argument("plan", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--suite", type=click.Path(file_okay=False), help="Run every plan (*.yml, *.yaml) in this folder.")
@click.option("--published", type=click.Path(dir_okay=False), multiple=True,
              help="Score predictions against published-cases files: --published FILE [FILE ...].")
@click.option("--steps", type=click.IntRange(1), default=10, show_default=True, help="Timed optimizer steps.")
@click.option("--warmup", type=click.IntRange(0), default=3, show_default=True, help="Untimed steps first.")
@click.option("--profile", "profiles", multiple=True, type=click.Path(dir_okay=False),
              help="Calibrated profile to predict with (replaces hardware.device). Repeatable: each plan then "
              "uses the profile calibrated with its workers' thread count (e.g. --threads 2 and --threads 1 "
              "profiles for 1- and 2-process plans on 2 cores).")
@click.option("--record", type=click.Path(dir_okay=False), help="Append one JSON line per measured plan.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VAL", help="Override a plan key (repeatable).")
@click.option("--threads", type=click.IntRange(1), help="Threads per worker [default: cores / data_parallel].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--no-scale-down", is_flag=True, help="Refuse plans too big for this machine instead of "
              "measuring a smaller variant.")
@click.option("--max-step-s", type=click.FloatRange(min=0, min_open=True), default=60.0, show_default=True,
              help="Scale down plans predicted slower than this per step.")
@click.option("--flush-denormal/--no-flush-denormal", default=True, show_default=True,
              help="Flush subnormal floats to zero on CPU (random-token training produces many; x86 handles "
              "them on a slow path).")
@click.option("--implementation", type=click.Choice(["simkit", "hf"]), default="simkit", show_default=True,
              help="The model trained: simkit's own transformer, or the plan's model as a Hugging Face class "
              "(GPT-2, Llama or BERT from a config object, random init; needs `pip install 'simkit[hf]'`).")
@click.option("--plot", type=click.Path(dir_okay=False),
              help="Write a predicted-vs-measured scatter (PNG or SVG, by the file's extension).")
@click.option("--cv", type=click.Choice(["source"]),
              help="With --published: leave-one-source-out (fit the free parameters on the other sources, predict "
              "each source), few-shot fits, and the interval's coverage by source. The files may also be "
              "validate --record JSONL or CSV/Parquet runs.")
@click.option("--write-interval", type=click.Path(dir_okay=False),
              help="With --cv source: write the interval per kind of profile (e.g. simkit/presets/model_error.yaml).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds a multi-process run may take before its workers are stopped and the rank that "
              "hung is named [default: 10 min + 10x the predicted time of its steps].")
def validate_cmd(plan, suite, published, steps, warmup, profiles, record, overrides, threads, device, no_scale_down,
                 max_step_s, flush_denormal, implementation, plot, cv, write_interval, as_json, timeout_s):
    """Compare predicted and measured step time: train PLAN (or every plan of --suite) here for real,
    or score the cases of published-cases files (--published FILE [FILE ...])."""
    if plot:
        figures.check_output(plot)   # before minutes of measuring, not after
    if published:
        published, plan = tuple(published) + tuple(plan), ()
    if len(plan) > 1:
        raise SimkitError(f"give one PLAN (got {len(plan)}: {' '.join(plan)}); for several, put them in a folder "
                          "and use --suite FOLDER")
    plan = plan[0] if plan else None
    if sum(bool(x) for x in (plan, suite, published)) != 1:
        raise SimkitError("give exactly one of PLAN, --suite FOLDER or --published FILE [FILE ...]")
    if (cv or write_interval) and not published:
        raise SimkitError("--cv and --write-interval apply to --published FILE [FILE ...]")
    if write_interval and not cv:
        raise SimkitError("--write-interval needs --cv source (the interval comes from held-out residuals)")
    if published:
        if profiles or record or overrides:
            raise SimkitError("--profile, --record and --set apply to live runs (PLAN or --suite), not --published")
        if implementation != "simkit":
            raise SimkitError("--implementation applies to live runs (PLAN or --suite), not --published")
        if cv:
            if write_interval:
                check_writable(write_interval, "--write-interval")
            return _cross_validate(list(published), write_interval, as_json)
        if plot:
            check_writable(plot, "--plot")
        return _published(list(published), plot, as_json)
    from simkit.validate import live as v

    paths = [Path(plan)] if plan else v.suite_plans(suite)
    for path, what in ((record, "--record"), (plot, "--plot")):
        if path:  # a full disk or a read-only folder is found before the runs, not after
            check_writable(path, what, append=path == record)
    if implementation == "hf":   # once, before any plan: the one-line error when transformers is missing
        from simkit.measure.hf_models import transformers_version

        transformers_version()
    options = dict(steps=steps, warmup=warmup, threads=threads, device=device, scale_down=not no_scale_down,
                   max_step_s=max_step_s, flush_denormal=flush_denormal, timeout_s=timeout_s,
                   implementation=implementation)
    results = []

    def interrupted() -> str:
        done = sum("error" in r for r in results)
        kept = f"; their records are in {record}" if record and done else ""
        return f"{done} of {len(paths)} plan{'s' * (len(paths) > 1)} measured{kept}; nothing else was written"

    with interruptible(interrupted), (progress.bar(len(paths), "plans") if suite else nullcontext()) as bar:
        for i, path in enumerate(paths, 1):
            if bar is not None:       # a terminal: one bar saying which plan, how many done, time left
                bar.set_description_str(f"measuring {path.name}")
            elif suite:
                click.echo(f"[{i}/{len(paths)}] {path}", err=True)
            try:
                result = _live_one(path, profiles, overrides, options)
            except SimkitError as exc:
                if not suite:
                    raise
                result = {"plan_file": str(path), "failure": "; ".join(exc.lines(5))}
                progress.echo(bar, f"  failed: {result['failure']}")
            else:
                if record:  # one whole line under a lock: concurrent validate runs never interleave
                    append_line(record, (v.record_line(result) + "\n").encode("utf-8"), what="--record file")
                if not as_json and not suite:
                    click.echo(_live_text(result))
            results.append(result)
            if bar is not None:
                bar.update(1)
    if plot:
        points = [{"measured": r["measured"]["step_time_s"], "predicted": r["predicted"]["step_time_s"],
                   "group": Path(r["plan_file"]).stem} for r in results if "error" in r]
        plots.predicted_vs_measured_plot(points, plot, title="simkit validate: step time")
    if as_json:
        doc = {"results": results, "summary": v.suite_summary(results)} if suite else results[0]
        click.echo(json.dumps(doc, indent=2, default=str))
    elif suite:
        click.echo(_suite_text(results, v.suite_summary(results)))


def _check_device(path: Path, profiles: tuple[str, ...]) -> None:
    from simkit.core.yamlio import read_yaml

    for profile in profiles:
        if not Path(profile).exists():
            raise SimkitError("profile file not found; write one with `simkit calibrate --device cpu --output FILE`",
                              file=profile)
    data = read_yaml(path).data
    hardware = (data.get("hardware") if isinstance(data, dict) else None) or {}
    if not profiles and isinstance(hardware, dict) and not hardware.get("device") and not hardware.get("system"):
        raise SimkitError("no hardware.device in the plan; give --profile FILE (a profile written by "
                          "`simkit calibrate`)", file=str(path))


def _live_one(path: Path, profiles: tuple[str, ...], overrides: tuple[str, ...], options: dict) -> dict:
    from simkit.validate import live as v
    from simkit.plan import load_plan

    _check_device(path, profiles)
    device = lambda p: [f"hardware.device={Path(p).resolve()}"]  # noqa: E731
    plan = load_plan(path, list(overrides) + (device(profiles[0]) if profiles else []))
    if len(profiles) > 1:
        chosen = v.choose_profile(list(profiles), v.worker_threads(plan, options["threads"]))
        plan = load_plan(path, list(overrides) + device(chosen))
    return v.validate_live(plan, **options)


def _live_text(r: dict) -> str:
    m, p, env = r["measured"], r["predicted"], r["measured"]["environment"]
    workers = env["world_size"]
    lines = [f"plan: {r['plan_file']}{_hf_tag(r)}   profile: {r['profile']}",
             f"measured on {env['host']} ({env['device_name']}), torch {env['torch_version']}, "
             f"{workers} worker{'s' if workers > 1 else ''} x {env['threads']} thread{'s' if env['threads'] > 1 else ''}; "
             f"median of {r['steps']} steps after {r['warmup']} warm-up",
             f"step time: predicted {tables.seconds(p['step_time_s'])}, measured {tables.seconds(m['step_time_s'])} "
             f"(IQR {tables.seconds(m['step_time_iqr_s'])}, fastest {tables.seconds(m['step_time_min_s'])}), "
             f"error {tables.percent(r['error'])}"
             + (f"; machine at {r['machine_speed']:.2f}x the profile's speed" if r.get("machine_speed") else ""), "",
             terminal.render_table(r["breakdown"], _BREAKDOWN_COLUMNS),
             "  (measured backward includes recomputation; communication_total is not part of the step sum)"]
    lines += _memory_lines(r)
    lines += ["", "notes:"] + [f"  - {n}" for n in r["notes"]]
    return "\n".join(lines)


def _memory_lines(r: dict) -> list[str]:
    mem = r["measured"].get("memory") or {}
    if "error" in mem:
        return ["", f"peak memory: not measured ({mem['error']})"]
    if not mem:
        return []
    p = r["predicted"]
    line = (f"peak memory (allocated): predicted {human_bytes(p.get('memory_allocated_peak_bytes'))}, measured "
            f"{human_bytes(mem['allocated_peak_bytes'])}, error {tables.percent(r.get('memory_error'))}")
    if mem.get("reserved_peak_bytes"):
        line += (f"; reserved: predicted {human_bytes(p.get('memory_reserved_peak_bytes'))}, measured "
                 f"{human_bytes(mem['reserved_peak_bytes'])}")
    out = ["", line, f"  measured with {mem['method']}"]
    kinds = mem.get("by_kind_bytes") or {}
    if kinds:
        predicted = p.get("memory_breakdown_bytes") or {}
        out.append("  at the peak, measured / predicted: " + ", ".join(
            f"{k.replace('_', ' ')} {human_bytes(v)} / {human_bytes(predicted.get(k, 0.0))}"
            for k, v in kinds.items() if v > 0))
    return out


def _hf_tag(r: dict) -> str:
    """' [hf]' after the name of a plan trained as a Hugging Face model."""
    return " [hf]" if r.get("implementation") == "hf" else ""


def _worst_part(r: dict) -> str:
    rows = [row for row in r["breakdown"] if row["error_of_step"] is not None]
    row = max(rows, key=lambda x: abs(x["error_of_step"]))
    return f"{row['part']} {tables.percent(row['error_of_step'])}"


def _memory_cell(r: dict) -> str:
    mem = r["measured"].get("memory") or {}
    if not mem.get("allocated_peak_bytes"):
        return "-"
    return (f"{human_bytes(r['predicted'].get('memory_allocated_peak_bytes'))} / "
            f"{human_bytes(mem['allocated_peak_bytes'])}")


def _suite_text(results: list[dict], summary: dict) -> str:
    rows = []
    for r in results:
        name = Path(r["plan_file"]).stem
        if "failure" in r:
            rows.append({"name": name, "shape": "failed: " + r["failure"][:80]})
            continue
        t, dp = r["plan"]["training"], r["plan"]["parallelism"]["data_parallel"]
        rows.append({"name": name + _hf_tag(r) + (" (scaled)" if r["variant"] else ""),
                     "shape": f"{dp} x {t['micro_batch_size']} x {t['grad_accum_steps']}, {t['precision']}",
                     "predicted": r["predicted"]["step_time_s"], "measured": r["measured"]["step_time_s"],
                     "iqr": r["measured"]["step_time_iqr_s"], "fastest": r["measured"]["step_time_min_s"],
                     "error": r["error"], "machine": r.get("machine_speed"), "worst_part": _worst_part(r),
                     "memory": _memory_cell(r), "memory_error": r.get("memory_error")})
    lines = [terminal.render_table(rows, _SUITE_COLUMNS), ""]
    if summary["count"]:
        lines.append(f"{summary['count']} plans measured, {summary['failed']} failed: MAE (mean |error|) "
                     f"{tables.percent(summary['mae'], signed=False)}, median {tables.percent(summary['median_ae'], signed=False)}, "
                     f"max {tables.percent(summary['max_ae'], signed=False)}, mean signed error {tables.percent(summary['mean_error'])}")
        if summary.get("memory"):
            mem = summary["memory"]
            lines.append(f"peak memory (allocated), {mem['count']} plans: MAE {tables.percent(mem['mae'], signed=False)}, "
                         f"max {tables.percent(mem['max_ae'], signed=False)}, mean signed error "
                         f"{tables.percent(mem['mean_error'])}")
        if summary.get("speed"):
            sp = summary["speed"]
            lines.append(f"machine: a GEMM timed around each plan ran at {sp['low']:.2f}x-{sp['high']:.2f}x the profile's "
                         f"speed (median {sp['median']:.2f}x). Diagnostic only: with every predicted step divided by "
                         f"that factor, MAE {tables.percent(sp['adjusted_mae'], signed=False)}, mean signed error "
                         f"{tables.percent(sp['adjusted_mean_error'])}")
        lines += ["", "which parts of the step the prediction gets wrong (predicted - measured, as a share of the "
                  "measured step, averaged over plans):",
                  terminal.render_table(summary["parts"], [("part", "part", tables.plain),
                                                  ("mean_error_of_step", "mean", tables.percent),
                                                  ("mean_abs_error_of_step", "mean |.|", lambda x: tables.percent(x, False))],
                               indent="  ")]
    else:
        lines.append(f"no plan could be measured ({summary['failed']} failed)")
    return "\n".join(lines)


def _published(paths: list[str], plot: str | None, as_json: bool) -> None:
    from simkit.validate import published as v

    score = v.score_published(v.load_published_files(paths))
    names = ", ".join(Path(p).name for p in paths)
    if plot:
        plots.predicted_vs_measured_plot(plots.published_points(score), plot, title=f"simkit vs published: {names}")
    if as_json:
        click.echo(json.dumps(score, indent=2))
        return
    click.echo(_published_text(" + ".join(paths), score))


def _published_text(path: str, score: dict) -> str:
    pct = lambda x: tables.percent(x, signed=False)  # noqa: E731
    cols = [("source", "source", tables.plain), ("count", "cases", str), ("mape", "MAPE", pct),
            ("median_ape", "median APE", pct), ("max_ape", "max APE", pct), ("mean_error", "mean error", tables.percent)]
    lines = [f"{path}: {len(score['cases'])} cases predicted, {len(score['skipped'])} skipped", "",
             terminal.render_table(score["sources"], cols), "", "by precision of the matmuls:",
             terminal.render_table(score["precisions"], [("source", "precision", tables.plain)] + cols[1:], indent="  ")]
    for s in score["sources"]:
        if s["source"] == "all":
            continue
        lines += ["", f"worst cases, {s['source']}:",
                  terminal.render_table(s["worst"], [("id", "id", tables.plain), ("predicted_step_time_s", "predicted", tables.seconds),
                                            ("measured_step_time_s", "measured", tables.seconds),
                                            ("error", "error", tables.percent)], indent="  ")]
    if score["skipped"]:
        lines += ["", "skipped:"] + [f"  {c['id']}: {c['reason']}" for c in score["skipped"][:10]]
        if len(score["skipped"]) > 10:
            lines.append(f"  ... and {len(score['skipped']) - 10} more (see --json)")
    return "\n".join(lines)


def _cross_validate(paths: list[str], write_interval: str | None, as_json: bool) -> None:
    """--published FILES --cv source [--write-interval FILE]: leave one source out, few-shot, the interval."""
    import datetime
    import sys

    from simkit.core.yamlio import read_yaml, write_atomic
    from simkit.report.crossval import crossval_text
    from simkit.validate import crossval as cv
    from simkit.validate.runs import load_run_plans, load_runs

    tty = sys.stderr.isatty() and not as_json
    say = (lambda text: click.echo(f"\r{text}\033[K", err=True, nl=False)) if tty else None
    runs = load_runs(paths)
    plans = load_run_plans(runs)
    loso = cv.leave_source_out(runs, plans, progress=say)
    shots = cv.few_shot(runs, plans, progress=say)
    found = cv.intervals(loso, shots)
    if tty:
        click.echo("\r\033[K", err=True, nl=False)
    if write_interval:
        existing = read_yaml(write_interval).data if Path(write_interval).exists() else {}
        write_atomic(write_interval, cv.interval_yaml(found, existing if isinstance(existing, dict) else {}, paths,
                                                      datetime.date.today().isoformat()))
    if as_json:
        click.echo(json.dumps({"leave_source_out": loso, "few_shot": shots, "intervals": found,
                               "interval_file": write_interval}, indent=2, default=float))
        return
    click.echo(crossval_text(" + ".join(paths), len(runs), loso, shots, found, write_interval))
