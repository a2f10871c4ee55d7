"""Progress of long work: on stderr, only on a terminal, saying what is done and the time left; sweeps
report it block by block without changing their result."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from simkit.cli import cli, progress
from simkit.core.errors import SimkitError
from simkit.search import sweep

TINY = Path(__file__).resolve().parents[1] / "examples" / "tiny-cpu.yml"
VARIES = ["training.micro_batch_size=1,2,4,8", "training.precision=fp32,bf16"]


def test_sweep_reports_each_block_and_the_blocks_change_nothing(monkeypatch):
    whole = sweep.run_sweep(TINY, VARIES)
    calls = []
    monkeypatch.setattr(sweep, "CHUNK_ROWS", 3)
    blocks = sweep.run_sweep(TINY, VARIES, progress=lambda done, total, what: calls.append((done, total, what)))
    pd.testing.assert_frame_equal(blocks, whole)
    # two groups (fp32, bf16) of four rows, each cut into blocks of 3 + 1
    assert calls == [(3, 8, "precision=fp32"), (4, 8, "precision=fp32"),
                     (7, 8, "precision=bf16"), (8, 8, "precision=bf16")]


def test_sweep_bar_on_a_terminal_only(runner, monkeypatch):
    args = ["sweep", str(TINY), *(a for v in VARIES for a in ("--vary", v))]
    piped = runner.invoke(cli, args)
    assert piped.exit_code == 0 and piped.stderr == ""
    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: True)
    monkeypatch.setattr(progress, "SWEEP_BAR_DELAY_S", 0.0)
    shown = runner.invoke(cli, args)
    assert shown.exit_code == 0, shown.output
    assert "predicting" in shown.stderr and "8/8 combinations" in shown.stderr and "left]" in shown.stderr
    assert "precision=bf16" in shown.stderr                           # what is being predicted
    assert shown.stdout.splitlines()[:-1] == piped.stdout.splitlines()[:-1]    # the table; the last line is timing


def _suite(tmp_path) -> list[str]:
    folder = tmp_path / "suite"
    folder.mkdir()
    for name in ("a.yml", "b.yml"):
        (folder / name).write_text(TINY.read_text(encoding="utf-8"), encoding="utf-8")
    return ["validate", "--suite", str(folder)]


def _fail(path, *args):
    raise SimkitError(f"{path.name} cannot run here")


def test_suite_progress_lines_when_piped(runner, monkeypatch, tmp_path):
    monkeypatch.setattr("simkit.cli.validate._live_one", _fail)
    result = runner.invoke(cli, _suite(tmp_path))
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert lines[0].startswith("[1/2] ") and lines[0].endswith("a.yml") and lines[1] == "  failed: a.yml cannot run here"
    assert lines[2].startswith("[2/2] ") and "%|" not in result.stderr


def test_suite_progress_bar_on_a_terminal(runner, monkeypatch, tmp_path):
    monkeypatch.setattr("simkit.cli.validate._live_one", _fail)
    monkeypatch.setattr(progress, "stderr_is_terminal", lambda: True)
    result = runner.invoke(cli, _suite(tmp_path))
    assert result.exit_code == 0, result.output
    assert "measuring b.yml  50%" in result.stderr and "1/2 plans" in result.stderr and "left]" in result.stderr
    assert "  failed: a.yml cannot run here" in result.stderr and "[1/2]" not in result.stderr
    assert "no plan could be measured (2 failed)" in result.stdout
