"""`simkit history`: list, show, compare, check and plot the calibration history."""
from __future__ import annotations

import re

import click

from simkit.core.errors import SimkitError, close_names
from simkit.report.terminal import render_grid

_HISTORY_HELP = ("History JSONL file. Default: $SIMKIT_HISTORY, else "
                 "$XDG_DATA_HOME/simkit/history.jsonl (~/.local/share/simkit/history.jsonl).")
_NOISY_IQR = 0.10  # IQR/median above this is flagged: the median is not a steady number


def _history_option(fn):
    return click.option("--history", "history_file", type=click.Path(dir_okay=False), default=None,
                        help=_HISTORY_HELP)(fn)


def _stat_options(fn):
    fn = click.option("--alpha", type=click.FloatRange(0, 1, min_open=True, max_open=True),
                      default=0.05, show_default=True,
                      help="Significance level of the Mann-Whitney U test.")(fn)
    return click.option("--threshold", type=click.FloatRange(min=0), default=5.0, show_default=True,
                        help="Smallest change of the median, in percent, that counts.")(fn)


def _load(history_file):
    from simkit.track import history

    path = history.resolve_path(history_file)
    records, warnings = history.load_records(path)
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)
    return path, records


# ------------------------------------------------------------------------------------ formatting
def _value(value: float, unit: str, like: float | None = None) -> str:
    """`value` of SI `unit` with a readable prefix, e.g. '215.3 GFLOP/s' (scaled like `like`)."""
    from simkit.track.history import display_scale

    divisor, label = display_scale(unit, value if like is None else like)
    digits = f"{value / divisor:#.4g}".rstrip(".")  # '#' keeps trailing zeros: 10.00, not 10
    return f"{digits} {label}".rstrip()


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def _p_is(p: float) -> str:
    return f"p={p:.2g}" if p >= 1e-4 else "p<1e-4"


def _when(record: dict) -> str:
    return str(record.get("timestamp", "?")).replace("T", " ").rstrip("Z")


def _describe(record: dict) -> str:
    fp = record.get("fingerprint") or {}
    return (f"{record['id']} ({_when(record)} UTC, host {fp.get('host') or '?'}, "
            f"{fp.get('device_name') or '?'}, git {record.get('git_revision') or '-'})")


def _comparison_rows(results) -> tuple[list[list[str]], list[str]]:
    rows, notes = [], []
    for r in results:
        verdict = r.verdict
        if r.note:
            notes.append(r.note)
            verdict += f" [{len(notes)}]"
        rows.append([r.name, _value(r.old_median, r.unit), _value(r.new_median, r.unit),
                     f"{r.change_pct:+.1f}%", _p(r.p_value), verdict])
    return rows, notes


def _echo_comparison(results, only_old, only_new, old_label="old", new_label="new") -> None:
    rows, notes = _comparison_rows(results)
    click.echo(render_grid(["benchmark", old_label, new_label, "change", "p", "verdict"], rows, {1, 2, 3, 4}))
    for i, note in enumerate(notes, start=1):
        click.echo(f"  [{i}] {note}")
    if only_old:
        click.echo(f"only in {old_label}: {', '.join(only_old)}")
    if only_new:
        click.echo(f"only in {new_label}: {', '.join(only_new)}")


# ------------------------------------------------------------------------------------ commands
@click.group("history", context_settings={"help_option_names": ["-h", "--help"]})
def history_cmd() -> None:
    """Calibration history: every `simkit calibrate --history FILE` run appends one record
    (raw samples per benchmark plus the machine fingerprint). Compare records and catch
    regressions: a change counts when the median moved more than --threshold percent AND a
    Mann-Whitney U test gives p < --alpha."""


@history_cmd.command("list", short_help="List the records.")
@_history_option
def list_cmd(history_file) -> None:
    """List the records: id, time, host, device, number of benchmarks, git revision."""
    path, records = _load(history_file)
    if not records:
        click.echo(f"no records in {path} (run `simkit calibrate --history {path}` to add one)")
        return
    rows = [[r["id"], _when(r), str((r.get("fingerprint") or {}).get("host") or "?"),
             str((r.get("fingerprint") or {}).get("device_name") or "?"), str(len(r["benchmarks"])),
             r.get("git_revision") or "-"] for r in records]
    click.echo(render_grid(["id", "time (UTC)", "host", "device", "benchmarks", "git"], rows, {4}))
    click.echo(f"{len(records)} record(s) in {path}")


@history_cmd.command("show", short_help="Show one record's benchmarks: median, IQR, n.")
@click.argument("record_ref", metavar="ID")
@_history_option
def show_cmd(record_ref, history_file) -> None:
    """Show one record: every benchmark with median, IQR and sample count.

    ID is a record id, a unique prefix of one, `last` or `last~N`."""
    from simkit.track.history import find_record

    path, records = _load(history_file)
    record = find_record(records, record_ref)
    click.echo(f"record:      {record['id']}")
    click.echo(f"time:        {_when(record)} UTC")
    click.echo(f"git:         {record.get('git_revision') or '-'}")
    fp = record.get("fingerprint") or {}
    click.echo("fingerprint: " + ", ".join(f"{k}={v}" for k, v in fp.items()))
    if record.get("settings"):
        click.echo("settings:    " + ", ".join(f"{k}={v}" for k, v in record["settings"].items()))
    rows, noisy = [], 0
    for name, spec in sorted(record["benchmarks"].items()):
        unit = spec.get("unit", "")
        median, iqr = _median_iqr(spec)
        spread = iqr / abs(median) if median else 0.0
        flag = " !" if spread > _NOISY_IQR else ""
        noisy += bool(flag)
        rows.append([name, _value(median, unit), _value(iqr, unit, median), f"{100 * spread:.1f}%{flag}",
                     str(len(spec["samples"])), "higher" if spec.get("higher_is_better", True) else "lower"])
    click.echo(render_grid(["benchmark", "median", "IQR", "IQR/median", "n", "better"], rows, {1, 2, 3, 4}))
    if noisy:
        click.echo(f"! {noisy} benchmark(s) with IQR above {100 * _NOISY_IQR:g}% of the median: "
                   "noisy, compare them with care")


def _median_iqr(spec: dict) -> tuple[float, float]:
    from simkit.track.regression import median_iqr

    if "median" in spec and "iqr" in spec:
        return float(spec["median"]), float(spec["iqr"])
    return median_iqr(spec["samples"])


@history_cmd.command("compare", short_help="Compare two records benchmark by benchmark.")
@click.argument("old_ref", metavar="A")
@click.argument("new_ref", metavar="B")
@_stat_options
@_history_option
def compare_cmd(old_ref, new_ref, threshold, alpha, history_file) -> None:
    """Compare record A (old) with record B (new), benchmark by benchmark.

    A and B are record ids, unique prefixes, `last` or `last~N`."""
    from simkit.track.history import fingerprint_differences, find_record

    path, records = _load(history_file)
    old, new = find_record(records, old_ref), find_record(records, new_ref)
    click.echo(f"A (old): {_describe(old)}")
    click.echo(f"B (new): {_describe(new)}")
    differences = fingerprint_differences(old.get("fingerprint"), new.get("fingerprint"))
    if differences:
        click.echo("note: measured on different setups (" + "; ".join(differences) + "): "
                   "differences may come from the setup, not the code")
    _report(old["benchmarks"], new["benchmarks"], threshold, alpha, ("A", "B"),
            "the records share no benchmark; nothing to compare")


def _report(old: dict, new: dict, threshold: float, alpha: float, labels: tuple[str, str], empty: str) -> list:
    """Compare two benchmark mappings, print the table and summary; returns the comparisons."""
    from simkit.track.regression import compare_benchmarks

    results, only_old, only_new = compare_benchmarks(old, new, threshold / 100, alpha)
    if not results:
        click.echo(empty)
        return results
    _echo_comparison(results, only_old, only_new, *labels)
    click.echo(_summary(results, threshold, alpha))
    return results


def _summary(results, threshold, alpha) -> str:
    from simkit.track.regression import smallest_p

    blind = sum(smallest_p(r.n_old, r.n_new) >= alpha for r in results)
    warning = (f"\nwarning: {blind} benchmark(s) have too few samples for the test ever to reach "
               f"p < {alpha:g}; they can never be flagged (take 5 or more samples per run)" if blind else "")
    counts = {v: sum(r.verdict == v for r in results) for v in ("regression", "improvement", "noise",
                                                               "no change")}
    text = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    return f"{len(results)} benchmark(s): {text} (threshold {threshold:g}%, alpha {alpha:g}){warning}"


_BASELINE = re.compile(r"^(last|median-of-(\d+))$")


@history_cmd.command("check", short_help="Latest record vs a baseline; exit 1 on regression.")
@click.option("--baseline", default="last", show_default=True,
              help="`last`: the previous record with the same fingerprint; `median-of-N`: the samples "
                   "of the N previous such records pooled.")
@_stat_options
@_history_option
def check_cmd(baseline, threshold, alpha, history_file) -> None:
    """Check the latest record against a baseline; exit 1 naming the regressed benchmarks.

    Only records with the same fingerprint (host, device, driver/CUDA/torch versions, threads)
    are a baseline. A change counts when it is beyond --threshold, significant (Mann-Whitney on
    the round medians), larger than the swing between the rounds of either run, and not reached
    by the slower run's fastest tenth of samples; with median-of-N (N >= 2) it must also fall
    outside the run-to-run spread of those N runs. Exit 0 when nothing regressed or there is no
    baseline yet. For CI and cron."""
    from simkit.track.history import baseline_records, pooled_benchmarks

    match = _BASELINE.match(baseline)
    if not match or (match.group(2) and int(match.group(2)) < 1):
        raise SimkitError(f"expected last or median-of-N with N >= 1 (e.g. median-of-5), got {baseline!r}",
                          key="--baseline")
    wanted = int(match.group(2) or 1)
    path, records = _load(history_file)
    if not records:
        click.echo(f"note: no records in {path}; nothing to check")
        return
    latest = records[-1]
    base = baseline_records(records, latest, wanted)
    click.echo(f"latest:   {_describe(latest)}")
    if not base:
        others = len(records) - 1
        why = f" ({others} earlier record(s) on other setups)" if others else ""
        click.echo(f"note: no earlier record with the same fingerprint{why}; no baseline, nothing to check")
        return
    how = [f"samples of {len(base)} records pooled"] if len(base) > 1 else []
    if len(base) < wanted:
        how.append(f"only {len(base)} of the {wanted} asked for exist")
    click.echo(f"baseline: {', '.join(r['id'] for r in base)}" + (f" ({'; '.join(how)})" if how else ""))
    results = _report(pooled_benchmarks(base), latest["benchmarks"], threshold, alpha, ("baseline", "latest"),
                      "note: the latest record shares no benchmark with its baseline; nothing to check")
    if not results:
        return
    if len(base) == 1:
        click.echo("note: a one-run baseline cannot show how much this machine varies from run to run; "
                   "if quiet runs get flagged, use --baseline median-of-5")
    regressed = [r for r in results if r.verdict == "regression"]
    if regressed:
        click.echo(f"FAIL: {len(regressed)} regression(s): "
                   + ", ".join(f"{r.name} ({r.change_pct:+.1f}%)" for r in regressed))
        click.get_current_context().exit(1)
    from simkit.track.regression import smallest_p

    blind = sum(smallest_p(r.n_old, r.n_new) >= alpha for r in results)
    click.echo("OK: no regression" + (f" (but {blind} benchmark(s) could not be tested, see above)"
                                      if blind else ""))


@history_cmd.command("plot", short_help="Plot a benchmark over time with change points.")
@click.argument("benchmark")
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False),
              help="Image file to write (PNG; the extension picks the format).")
@click.option("--all-setups", is_flag=True,
              help="Plot records of every fingerprint, not only the latest record's.")
@_stat_options
@_history_option
def plot_cmd(benchmark, output, all_setups, threshold, alpha, history_file) -> None:
    """Plot BENCHMARK over time with its change points marked.

    Each record shows its samples (dots) and median with IQR bars. A dashed line marks a change
    point: a run that `check --baseline median-of-5` would flag against the runs before it since
    the previous change point (median moved more than --threshold percent, Mann-Whitney
    p < --alpha, and outside the run-to-run spread of those runs)."""
    from simkit.track.history import plot_benchmark, same_fingerprint

    path, records = _load(history_file)
    having = [r for r in records if benchmark in r["benchmarks"]]
    if not having:
        names = sorted({n for r in records for n in r["benchmarks"]})
        if not names:
            raise SimkitError(f"no records in {path}; nothing to plot")
        raise SimkitError(f"no benchmark {benchmark!r} in {path}; {close_names(benchmark, names)}")
    series = having if all_setups else [
        r for r in having if same_fingerprint(r.get("fingerprint", {}), having[-1].get("fingerprint", {}))]
    try:
        points = plot_benchmark(series, benchmark, output, threshold / 100, alpha)
    except (OSError, ValueError) as exc:
        raise SimkitError(f"cannot write the plot: {exc}", file=str(output)) from None
    skipped = len(having) - len(series)
    click.echo(f"wrote {output}: {benchmark} over {len(series)} record(s)"
               + (f" ({skipped} on other setups left out; --all-setups includes them)" if skipped else ""))
    for record, result in points:
        click.echo(f"  change point at {record['id']}: {result.verdict} {result.change_pct:+.1f}% "
                   f"({_p_is(result.p_value)})")
    if not points:
        click.echo("  no change points")
