"""`simkit history ...` through click's CliRunner: tables, exit codes, error text, the plot."""
import numpy as np
import pytest
from click.testing import CliRunner

from simkit.track import history
from simkit.cli import cli

FP = {"host": "box", "device_name": "cpu", "driver_version": None, "cuda_version": None,
      "torch_version": "2.13.0", "threads": 2}
MATMUL = "matmul.fp32.1024x1024x1024"
COPY = "memory_bandwidth.copy.67108864"


def _add(path, seed, matmul=1e11, copy=1e10, n=15, fingerprint=FP):
    """Append a record with `n` samples per benchmark, 2% noise, around the given medians."""
    rng = np.random.default_rng(seed)
    benchmarks = {MATMUL: history.benchmark_entry(rng.normal(matmul, 0.02 * matmul, n), "flop_per_s", True),
                  COPY: history.benchmark_entry(rng.normal(copy, 0.02 * copy, n), "bytes_per_s", True)}
    return history.append_record({"git_revision": f"rev{seed}", "fingerprint": dict(fingerprint),
                                  "settings": {"device": "cpu", "quick": True},
                                  "benchmarks": benchmarks}, path)


def _run(*args):
    return CliRunner().invoke(cli, ["history", *map(str, args)])


@pytest.fixture
def path(tmp_path):
    return tmp_path / "h.jsonl"


def test_check_fails_naming_the_regressed_benchmark(path):
    _add(path, 1)
    _add(path, 2, matmul=0.8e11)  # 20% slower matmul, same copy bandwidth
    result = _run("check", "--history", path)
    assert result.exit_code == 1, result.output
    assert f"FAIL: 1 regression(s): {MATMUL} (-2" in result.output
    assert COPY not in result.output.splitlines()[-1]
    assert "regression" in next(line for line in result.output.splitlines() if line.startswith(MATMUL))


def test_check_passes_on_noise(path):
    _add(path, 1)
    _add(path, 2)
    result = _run("check", "--history", path)
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith("OK: no regression")


def test_check_without_baseline_passes_with_a_note(path):
    _add(path, 1, fingerprint=dict(FP, threads=4))
    _add(path, 2)
    result = _run("check", "--history", path)
    assert result.exit_code == 0
    assert "no earlier record with the same fingerprint (1 earlier record(s) on other setups)" in result.output
    empty = _run("check", "--history", path.parent / "none.jsonl")
    assert empty.exit_code == 0 and "no records in" in empty.output


def test_check_against_pooled_baseline(path):
    for seed in range(3):
        _add(path, seed)
    _add(path, 9, matmul=0.8e11)
    result = _run("check", "--baseline", "median-of-3", "--history", path)
    assert result.exit_code == 1
    baseline_line = next(line for line in result.output.splitlines() if line.startswith("baseline:"))
    assert baseline_line.count(",") == 2 and baseline_line.endswith("(samples of 3 records pooled)")
    more = _run("check", "--baseline", "median-of-5", "--history", path)
    assert "(samples of 3 records pooled; only 3 of the 5 asked for exist)" in more.output


def test_check_threshold_is_in_percent(path):
    _add(path, 1)
    _add(path, 2, matmul=0.8e11)
    assert _run("check", "--threshold", "25", "--history", path).exit_code == 0


@pytest.mark.parametrize("args, message", [
    (["check", "--baseline", "median-of-x"], "--baseline: expected last or median-of-N"),
    (["check", "--baseline", "median-of-0"], "median-of-N with N >= 1"),
    (["check", "--threshold", "-1"], "Invalid value for '--threshold'"),
    (["check", "--alpha", "1.5"], "Invalid value for '--alpha'"),
    (["show", "nope"], "error: no record 'nope'; known: "),
    (["compare", "last", "last~9"], "error: no record 'last~9': the history has only 2 record(s)"),
    (["plot", "matmul.fp32.1024", "-o", "x.png"], f"did you mean '{MATMUL}'"),
])
def test_bad_input_exits_2_with_a_sentence(path, args, message):
    _add(path, 1)
    _add(path, 2)
    result = _run(*args, "--history", path)
    assert result.exit_code == 2
    assert message in result.output


def test_list_and_show(path):
    first = _add(path, 1)
    _add(path, 2)
    listing = _run("list", "--history", path)
    assert listing.exit_code == 0
    header, rule, row1, row2, total = listing.output.splitlines()
    assert header.split() == ["id", "time", "(UTC)", "host", "device", "benchmarks", "git"]
    assert row1.startswith(first) and row1.split()[-2:] == ["2", "rev1"]
    assert total == f"2 record(s) in {path}"
    shown = _run("show", first[:20], "--history", path)
    assert shown.exit_code == 0
    assert f"record:      {first}" in shown.output
    row = next(line for line in shown.output.splitlines() if line.startswith(MATMUL))
    assert "GFLOP/s" in row and row.split()[-2:] == ["15", "higher"]
    assert "GB/s" in next(line for line in shown.output.splitlines() if line.startswith(COPY))


def test_list_of_empty_history_says_how_to_fill_it(path):
    result = _run("list", "--history", path)
    assert result.exit_code == 0 and "simkit calibrate --history" in result.output


def test_compare_table(path):
    _add(path, 1, fingerprint=dict(FP, threads=4))
    _add(path, 2, matmul=1.3e11)
    result = _run("compare", "last~1", "last", "--history", path)
    assert result.exit_code == 0
    assert "note: measured on different setups (threads: 4 vs 2)" in result.output
    lines = result.output.splitlines()
    assert lines[3].split() == ["benchmark", "A", "B", "change", "p", "verdict"]
    assert lines[5].startswith(MATMUL) and lines[5].split()[-3:] == ["+28.3%", "<1e-4", "improvement"]
    assert lines[6].startswith(COPY) and lines[6].endswith("no change")
    assert lines[7] == "2 benchmark(s): 1 improvement, 1 no change (threshold 5%, alpha 0.05)"


def test_warnings_for_corrupt_lines_go_to_stderr(path):
    _add(path, 1)
    with open(path, "a") as fh:
        fh.write('{"id": "half')
    result = _run("list", "--history", path)
    assert result.exit_code == 0
    assert f"warning: {path}:2: skipped: not valid JSON (cut short" in result.stderr
    assert "1 record(s)" in result.stdout


def test_plot_writes_a_png(path, tmp_path):
    for seed in range(3):
        _add(path, seed)
    for seed in range(3, 6):
        _add(path, seed, matmul=0.6e11)
    out = tmp_path / "matmul.png"
    result = _run("plot", MATMUL, "--output", out, "--history", path)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "change point at" in result.output and "regression -40" in result.output


def test_too_few_samples_are_called_out(path):
    _add(path, 1, n=3)
    _add(path, 2, n=3, matmul=0.5e11)
    result = _run("check", "--history", path)
    assert result.exit_code == 0
    assert "too few samples (3 vs 3): the smallest possible p is 0.1" in result.output
    assert "warning: 2 benchmark(s) have too few samples for the test ever to reach p < 0.05" in result.output


def test_median_of_n_tolerates_run_to_run_wander_that_last_flags(path):
    for seed, center in enumerate([1.00e11, 1.15e11, 0.90e11, 1.08e11, 0.95e11]):
        _add(path, seed, matmul=center)
    _add(path, 9, matmul=0.80e11)  # -16% from the last run, inside the machine's usual wander
    last = _run("check", "--history", path)
    assert last.exit_code == 1 and "use --baseline median-of-5" in last.output
    pooled = _run("check", "--baseline", "median-of-5", "--history", path)
    assert pooled.exit_code == 0, pooled.output
    assert "within the run-to-run spread of the 5 baseline runs" in pooled.output
    _add(path, 10, matmul=0.5e11)  # and a real slowdown is still caught
    slow = _run("check", "--baseline", "median-of-5", "--history", path)
    assert slow.exit_code == 1 and f"FAIL: 1 regression(s): {MATMUL}" in slow.output
