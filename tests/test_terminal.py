"""Tables on the terminal: rich on an interactive terminal, the plain text unchanged when piped or with
NO_COLOR, and --json never touched."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from simkit.cli import cli
from simkit.report import tables, terminal

DATA = Path(__file__).parent / "data" / "published-dev.yaml"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
ROWS = [{"plan": "base", "step": 1.5, "verdict": "regression [1]"},
        {"plan": "wide", "step": 0.0123, "verdict": None}]
COLUMNS = [("plan", "plan", tables.plain), ("step", "step", tables.seconds), ("verdict", "verdict", tables.plain)]


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_plain_table_is_aligned_text():
    assert terminal.render_table(ROWS, COLUMNS, fancy=False) == (
        "plan     step  verdict\n"
        "----  -------  --------------\n"
        "base    1.5 s  regression [1]\n"
        "wide  12.3 ms  -")
    assert terminal.render_table(ROWS, COLUMNS, fancy=False, indent="  ") == tables.table(ROWS, COLUMNS, indent="  ")


def test_rich_table_keeps_cells_literal_and_numbers_right_aligned():
    text = ANSI.sub("", terminal.render_table(ROWS, COLUMNS, fancy=True))
    lines = text.splitlines()
    assert lines[0].split() == ["plan", "step", "verdict"]
    assert set(lines[1]) == {"─"}                      # rich's rule under the header, not dashes
    assert "regression [1]" in lines[2]                 # not swallowed as rich markup
    step_end = lines[0].index("step") + len("step")     # the seconds column is right-aligned under its header
    assert lines[2][:step_end].endswith("1.5 s") and lines[3][:step_end].endswith("12.3 ms")


@pytest.mark.parametrize("env, tty, expected", [({}, True, True), ({}, False, False),
                                                ({"NO_COLOR": "1"}, True, False), ({"TERM": "dumb"}, True, False)])
def test_fancy_only_on_an_interactive_terminal_without_no_color(monkeypatch, env, tty, expected):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert terminal.fancy_terminal(_Tty() if tty else io.StringIO()) is expected


def test_cli_tables_use_rich_on_a_terminal_and_json_stays_json(runner, monkeypatch):
    plain = runner.invoke(cli, ["validate", "--published", str(DATA)])
    assert plain.exit_code == 0 and "\x1b[" not in plain.output and "─" not in plain.output
    monkeypatch.setattr(terminal, "fancy_terminal", lambda stream=None: True)
    fancy = runner.invoke(cli, ["validate", "--published", str(DATA)])
    assert fancy.exit_code == 0 and "─" in fancy.output
    first = lambda out: next(line for line in ANSI.sub("", out).splitlines() if line.startswith("all "))  # noqa: E731
    assert first(fancy.output).split() == first(plain.output).split()    # the same numbers, drawn differently
    as_json = runner.invoke(cli, ["validate", "--published", str(DATA), "--json"])
    assert json.loads(as_json.output)["sources"][-1]["source"] == "all"


def test_sweep_table_with_rich_shows_every_column(runner, monkeypatch):
    monkeypatch.setattr(terminal, "fancy_terminal", lambda stream=None: True)
    monkeypatch.setenv("COLUMNS", "400")
    plan = Path(__file__).resolve().parents[1] / "examples" / "tiny-cpu.yml"
    result = runner.invoke(cli, ["sweep", str(plan), "--vary", "training.micro_batch_size=1,2,3"])
    assert result.exit_code == 0, result.output
    header = ANSI.sub("", result.output).splitlines()[0].split()
    assert header[:3] == ["training.micro_batch_size", "reason", "step_time_s"]
    assert "global_batch_size is not micro_batch_size" in result.output   # 8 samples do not split into 3s
