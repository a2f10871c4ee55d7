"""The calibration history: an append-only JSONL file of benchmark records (format in docs/DESIGN.md).

Where it lives: ``--history FILE`` if given, else ``$SIMKIT_HISTORY``, else
``$XDG_DATA_HOME/simkit/history.jsonl`` (``~/.local/share/simkit/history.jsonl`` without XDG_DATA_HOME).

Writing is safe against concurrent writers and crashes: each record is one line, written with one
``os.write`` under an exclusive ``fcntl.flock`` and fsynced, so a record is whole or absent. A line
cut short by a crash is reported (with its line number) and skipped on reading; the next append
starts on a fresh line so it never glues onto the broken one.
"""
from __future__ import annotations

import json
import math
import os
import secrets
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from simkit.core.errors import SimkitError
from simkit.core.files import append_line, save_figure

MAX_WARNINGS = 10
"""Skipped lines reported one by one; the rest are counted."""
FINGERPRINT_KEYS = ("host", "device_name", "driver_version", "cuda_version", "torch_version", "threads")
"""Two records are comparable when all of these are equal."""


def default_path() -> Path:
    """The history file used when no --history is given."""
    if os.environ.get("SIMKIT_HISTORY"):
        return Path(os.environ["SIMKIT_HISTORY"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "simkit" / "history.jsonl"


def resolve_path(path: str | os.PathLike | None) -> Path:
    return Path(path).expanduser() if path else default_path()


# ---------------------------------------------------------------------------------------- records
def fingerprint_of(environment: dict) -> dict:
    """The comparable-machine part of a calibration environment (missing keys become None)."""
    return {key: environment.get(key) for key in FINGERPRINT_KEYS}


def fingerprint_differences(a: dict, b: dict) -> list[str]:
    """Human-readable list of fingerprint keys that differ, e.g. ["threads: 2 vs 4"]."""
    a, b = a or {}, b or {}
    return [f"{key}: {a.get(key)} vs {b.get(key)}" for key in FINGERPRINT_KEYS if a.get(key) != b.get(key)]


def same_fingerprint(a: dict, b: dict) -> bool:
    """Same host, device, driver/CUDA/torch versions and thread count."""
    return not fingerprint_differences(a, b)


def benchmark_entry(samples, unit: str, higher_is_better: bool) -> dict:
    """One ``benchmarks`` value of a record: raw samples plus their median and IQR."""
    from simkit.track.regression import median_iqr

    values = [float(x) for x in samples]
    median, iqr = median_iqr(values)
    return {"unit": unit, "higher_is_better": bool(higher_is_better), "samples": values,
            "median": median, "iqr": iqr}


def git_revision(cwd: str | os.PathLike | None = None) -> str | None:
    """Short commit of the git checkout in `cwd` (the current directory), "+dirty" when it has
    uncommitted changes to tracked files; None outside a checkout or without git."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5)
    try:
        head = git("rev-parse", "--short", "HEAD")
        if head.returncode != 0:
            return None
        dirty = git("diff", "--quiet", "HEAD").returncode == 1
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_record_id(timestamp: str) -> str:
    """``20261122T193000Z-ab12cd``: sortable by time, random suffix against same-second clashes."""
    return timestamp.replace("-", "").replace(":", "") + "-" + secrets.token_hex(3)


def _numbers(values) -> bool:
    return isinstance(values, list) and all(
        isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in values)


_OPTIONAL_TYPES = {"id": str, "timestamp": str, "git_revision": (str, type(None)), "fingerprint": dict,
                   "settings": dict, "environment": dict}
_BENCHMARK_TYPES = {"unit": str, "higher_is_better": bool, "median": (int, float), "iqr": (int, float)}


def record_problem(record) -> str | None:
    """Why `record` is not a usable history record, or None when it is."""
    if not isinstance(record, dict):
        return f"expected a JSON object, got {type(record).__name__}"
    if not isinstance(record.get("benchmarks"), dict):
        return "no 'benchmarks' mapping"
    for key, types in _OPTIONAL_TYPES.items():
        if key in record and not isinstance(record[key], types):
            return f"'{key}' is a {type(record[key]).__name__}"
    for name, spec in record["benchmarks"].items():
        samples = spec.get("samples") if isinstance(spec, dict) else None
        if not isinstance(samples, list) or not samples:
            return f"benchmark {name!r} has no samples list"
        if not _numbers(samples):
            return f"benchmark {name!r} has a sample that is not a finite number"
        for key, types in _BENCHMARK_TYPES.items():
            if key in spec and (not isinstance(spec[key], types) or (types != bool and isinstance(spec[key], bool))):
                return f"benchmark {name!r} has a '{key}' that is a {type(spec[key]).__name__}"
        for key in ("round_medians", "run_medians"):
            if spec.get(key) is not None and not _numbers(spec[key]):
                return f"benchmark {name!r} has a '{key}' that is not a list of finite numbers"
    return None


def _completed(record: dict) -> dict:
    """A copy of `record` with id, timestamp, git_revision, and each benchmark's median/IQR filled."""
    from simkit.track.regression import median_iqr

    problem = record_problem(record)
    if problem:
        raise SimkitError(f"cannot append to history: {problem}")
    timestamp = record.get("timestamp") or _utc_now()
    out = {"id": record.get("id") or new_record_id(timestamp), "timestamp": timestamp,
           "git_revision": record["git_revision"] if "git_revision" in record else git_revision(),
           "fingerprint": record.get("fingerprint") or {}}
    out.update((k, v) for k, v in record.items() if k not in out)
    out["benchmarks"] = {}
    for name, spec in record["benchmarks"].items():
        spec = dict(spec)
        median, iqr = median_iqr(spec["samples"])
        spec.setdefault("median", median)
        spec.setdefault("iqr", iqr)
        spec.setdefault("higher_is_better", True)
        spec.setdefault("unit", "")
        out["benchmarks"][name] = spec
    return out


# ---------------------------------------------------------------------------------------- writing
def append_record(record: dict, path: str | os.PathLike | None = None) -> str:
    """Append one record to the history at `path` (see resolve_path); returns the record id."""
    full = _completed(record)
    try:
        line = (json.dumps(full, separators=(",", ":"), allow_nan=False) + "\n").encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise SimkitError(f"cannot append to history: record is not plain JSON ({exc})") from None
    target = resolve_path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SimkitError(f"cannot open history for writing: {exc.strerror}", file=str(target)) from None
    append_line(target, line, what="history")
    return full["id"]


# ---------------------------------------------------------------------------------------- reading
def _read_locked(target: Path) -> bytes:
    import fcntl

    with open(target, "rb") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_SH)  # never see a line while it is being written
        return fh.read()


def load_records(path: str | os.PathLike | None = None) -> tuple[list[dict], list[str]]:
    """All whole records in file order, plus one warning per line that was skipped (the first
    MAX_WARNINGS, then a count). A file none of whose lines is a record is not a history file: one
    SimkitError says so (rather than a warning per line).

    A missing file is an empty history. Warnings read ``FILE:LINE: skipped: why``.
    """
    target = resolve_path(path)
    try:
        data = _read_locked(target)
    except FileNotFoundError:
        return [], []
    except IsADirectoryError:
        raise SimkitError("is a directory, expected a history JSONL file", file=str(target)) from None
    except OSError as exc:
        raise SimkitError(f"cannot read history: {exc.strerror}", file=str(target)) from None
    records, warnings = [], []
    lines = data.split(b"\n")
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        last_unterminated = number == len(lines)
        try:
            record = json.loads(raw.decode("utf-8"))
            problem = record_problem(record)
        except (UnicodeDecodeError, ValueError, RecursionError):  # ValueError: bad JSON, or a 5000-digit number
            problem = "not valid JSON" + (" (cut short: the last line has no newline; an interrupted "
                                          "write?)" if last_unterminated else "")
        if problem is None and not isinstance(record.get("id"), str):
            problem = "record has no 'id'"
        if problem:
            warnings.append(f"{target}:{number}: skipped: {problem}")
            continue
        records.append(record)
    if not records and (len(warnings) > 1 or (warnings and "cut short" not in warnings[0])):
        # say it once, not once per line (a lone line cut short is a first record whose write was interrupted)
        raise SimkitError(f"not a simkit history file (none of its {len(warnings)} non-empty line"
                          f"{'s' * (len(warnings) > 1)} is a history record; the first: "
                          f"{warnings[0].split('skipped: ', 1)[1]})", file=str(target))
    if len(warnings) > MAX_WARNINGS:
        more = len(warnings) - MAX_WARNINGS
        warnings = warnings[:MAX_WARNINGS] + [f"{target}: ... and {more} more line{'s' * (more > 1)} skipped"]
    return records, warnings


def find_record(records: list[dict], ref: str) -> dict:
    """The record named by `ref`: ``last``, ``last~N`` (N records before the last), a full id or a
    unique id prefix."""
    ids = [r["id"] for r in records]
    if not records:
        raise SimkitError(f"no record {ref!r}: the history is empty")
    if ref == "last" or ref.startswith("last~"):
        back = ref[5:] if ref != "last" else "0"
        if not back.isdigit():
            raise SimkitError(f"bad record reference {ref!r}; write last, last~1, last~2, ...")
        if int(back) >= len(records):
            raise SimkitError(f"no record {ref!r}: the history has only {len(records)} record(s)")
        return records[-1 - int(back)]
    matches = [r for r in records if r["id"] == ref] or [r for r in records if r["id"].startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        shown = ", ".join(r["id"] for r in matches[:6])
        raise SimkitError(f"record prefix {ref!r} is ambiguous: matches {shown}; write more of the id")
    import difflib

    close = difflib.get_close_matches(ref, ids, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    more = f"{len(ids) - 6} older, " if len(ids) > 6 else ""
    raise SimkitError(f"no record {ref!r}; {hint}known: {', '.join(reversed(ids[-6:]))} "
                      f"({more}newest first; also last, last~1, ...)")


def baseline_records(records: list[dict], latest: dict, count: int = 1) -> list[dict]:
    """Up to `count` records just before `latest` with the same fingerprint (oldest first)."""
    index = next(i for i, r in enumerate(records) if r is latest)
    earlier = [r for r in records[:index]
               if same_fingerprint(r.get("fingerprint", {}), latest.get("fingerprint", {}))]
    return earlier[-count:] if count else []


def pooled_benchmarks(records: list[dict]) -> dict:
    """One ``benchmarks`` mapping standing for all `records` (oldest first): per benchmark, the
    entries of the records that have it put together by `regression.pool_runs` (samples pooled, each
    run's median kept as "run_medians", the largest within-run swing as "round_swing")."""
    from simkit.track.regression import pool_runs

    names = dict.fromkeys(name for record in records for name in record["benchmarks"])
    return {name: pool_runs([r["benchmarks"][name] for r in records if name in r["benchmarks"]])
            for name in names}


# ---------------------------------------------------------------------------------------- units
_SCALES = {
    "flop_per_s": ((1e12, "TFLOP/s"), (1e9, "GFLOP/s"), (1e6, "MFLOP/s"), (1.0, "FLOP/s")),
    "bytes_per_s": ((1e12, "TB/s"), (1e9, "GB/s"), (1e6, "MB/s"), (1.0, "B/s")),
    "bytes": ((1e9, "GB"), (1e6, "MB"), (1e3, "kB"), (1.0, "B")),
    "s": ((1.0, "s"), (1e-3, "ms"), (1e-6, "us"), (1e-9, "ns")),
}


def display_scale(unit: str, value: float) -> tuple[float, str]:
    """(divisor, label) that shows `value` of SI `unit` readably, e.g. 2.1e11 flop_per_s -> GFLOP/s."""
    scales = _SCALES.get(unit)
    if not scales:
        return 1.0, unit
    for divisor, label in scales:
        if abs(value) >= divisor:
            return divisor, label
    return scales[-1]


# ---------------------------------------------------------------------------------------- plot
def plot_benchmark(records: list[dict], name: str, output: str | os.PathLike,
                   threshold: float = 0.05, alpha: float = 0.05) -> list:
    """Draw benchmark `name` across `records` (oldest first) into a PNG at `output`: every sample
    as a dot, the median with IQR error bars, and change points (regression.change_points)
    marked. Returns the change points as (record, Comparison) pairs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from simkit.track.regression import change_points

    specs = [r["benchmarks"][name] for r in records]
    higher_is_better = bool(specs[-1].get("higher_is_better", True))
    divisor, label = display_scale(specs[-1].get("unit", ""), specs[-1]["median"] if "median" in specs[-1]
                                   else float(np.median(specs[-1]["samples"])))
    samples = [np.asarray(s["samples"], dtype=float) / divisor for s in specs]
    q25, q50, q75 = np.array([np.percentile(s, [25, 50, 75]) for s in samples]).T
    points = change_points(specs, threshold, alpha)  # the rules of `check --baseline median-of-5`

    x = np.arange(len(records))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(records) + 3), 4.5), layout="constrained")
    rng = np.random.default_rng(0)  # jitter only spreads the dots sideways
    for i, s in enumerate(samples):
        ax.scatter(i + rng.uniform(-0.12, 0.12, s.size), s, s=10, color="0.6", zorder=1,
                   label="samples" if i == 0 else None)
    ax.errorbar(x, q50, yerr=[q50 - q25, q75 - q50], fmt="o-", color="tab:blue", capsize=4, zorder=2,
                label="median, IQR")
    for k, (i, result) in enumerate(points):
        color = "tab:red" if result.verdict == "regression" else "tab:green"
        p_text = f"p={result.p_value:.0e}" if result.p_value >= 1e-4 else "p<1e-4"
        ax.axvline(i - 0.5, color=color, linestyle="--", zorder=0)
        ax.annotate(f"{result.verdict}\n{result.change_pct:+.0f}%, {p_text}", (i - 0.5, 0.98 - 0.09 * (k % 2)),
                    xycoords=("data", "axes fraction"), ha="center", va="top", fontsize=7, color=color,
                    bbox={"fc": "white", "ec": "none", "pad": 1})  # alternate heights: neighbours
    ax.set_xticks(x, [_tick(r) for r in records], fontsize=7,
                  rotation=30 if len(records) > 6 else 0, ha="right" if len(records) > 6 else "center")
    ax.set_xlim(-0.6, len(records) - 0.4)
    ax.set_ylabel(f"{name} ({label})")
    better = "higher" if higher_is_better else "lower"
    ax.set_title(f"{name} ({better} is better)\ndashed: change point (median moved > {100 * threshold:g}%, "
                 f"p < {alpha:g}, beyond the runs' own spread)", fontsize=9)
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + 0.3 * (high - low))  # headroom for the change-point labels
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    save_figure(fig, output, dpi=120)  # whole or absent
    plt.close(fig)
    return [(records[i], result) for i, result in points]


def _tick(record: dict) -> str:
    stamp = str(record.get("timestamp", ""))
    when = stamp[5:16].replace("T", " ") if len(stamp) >= 16 else record["id"][:13]
    return f"{when}\n{record.get('git_revision') or record['id'][-6:]}"
