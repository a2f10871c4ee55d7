"""Fuzzing the loaders: plans, profiles, history files, published-cases files and --set values.

Each loader gets generated input (tests/fuzzing.py: mutated text and structures, random text) and
must either load it -- and then what it loaded must predict finite numbers -- or raise a SimkitError
the CLI prints as one line per error (exit 2). A traceback, or an input taking over 5 s, fails.

The default run tries a few hundred inputs per loader; `-m slow` runs 10,000 each (CI's second
step). Inputs that once failed are kept in tests/fuzz_corpus/ and replayed by test_fuzz_corpus.py.
"""
from __future__ import annotations

import atexit
import dataclasses
import datetime
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings

import fuzzing
from simkit.core.errors import SimkitError
from simkit.core.yamlio import parse_yaml
from simkit.hardware import parse_device
from simkit.model.step import predict
from simkit.plan import load_plan

FAST, SLOW = 300, 10_000
SIZES = [pytest.param(FAST, id="fast"), pytest.param(SLOW, id="slow", marks=pytest.mark.slow)]
TMP = Path(tempfile.mkdtemp(prefix="simkit-fuzz-"))
atexit.register(shutil.rmtree, TMP, ignore_errors=True)


def fuzz(strategy, check, examples: int) -> int:
    """Run `check` on `examples` generated inputs (fixed seed in the fast run); returns how many ran."""
    seen = 0

    @settings(max_examples=examples, deadline=datetime.timedelta(seconds=5), database=None,
              derandomize=examples <= FAST, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(value):
        nonlocal seen
        seen += 1
        check(value)

    run()
    print(f"{check.__name__}: {seen} inputs", file=sys.stderr)
    return seen


def _loads_or_one_line_errors(load, *args):
    try:
        return load(*args)
    except SimkitError as exc:
        fuzzing.assert_one_line_per_error(exc)
        return None


# ----------------------------------------------------------------------------- plans
def check_plan(text: str) -> None:
    path = TMP / "plan.yml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    plan = _loads_or_one_line_errors(load_plan, path)
    if plan is not None:
        fuzzing.assert_finite_prediction(predict(plan))


@pytest.mark.parametrize("examples", SIZES)
def test_fuzz_plan_loader(examples):
    assert fuzz(fuzzing.plan_texts(), check_plan, examples) >= examples


# ----------------------------------------------------------------------------- --set values
def check_set(overrides: list[str]) -> None:
    path = TMP / "set-plan.yml"
    if not path.exists():
        path.write_text(fuzzing.RICH_PLAN)
    plan = _loads_or_one_line_errors(load_plan, path, overrides)
    if plan is not None:
        fuzzing.assert_finite_prediction(predict(plan))


@pytest.mark.parametrize("examples", SIZES)
def test_fuzz_set_values(examples):
    assert fuzz(fuzzing.set_values(), check_set, examples) >= examples


# ----------------------------------------------------------------------------- profiles
_BASE_PLAN = None


def _profile_plan():
    """A plan on the shipped calibrated profile, 2 workers per node x 2 nodes; fuzzed devices replace its device."""
    global _BASE_PLAN
    if _BASE_PLAN is None:
        data = {"model": {"n_layers": 2, "d_model": 64, "n_heads": 4, "vocab_size": 100, "seq_len": 32},
                "data": {"tokens": 1e6},
                "training": {"global_batch_size": 8, "micro_batch_size": 2, "precision": "fp32"},
                "hardware": {"device": str(fuzzing.DATA / "calibrated-cpu-2x2.yaml"), "devices_per_node": 2,
                             "nodes": 2}}
        _BASE_PLAN = load_plan(data)
    return _BASE_PLAN


def check_profile(text: str) -> None:
    device = _loads_or_one_line_errors(lambda: parse_device(parse_yaml(text, "profile.yaml")))
    if device is None:
        return
    plan = _profile_plan()  # what the loaded profile says must predict finite numbers, in one of its dtypes
    precision = "fp32" if "fp32" in device.peak_flop_per_s else next(iter(device.peak_flop_per_s))
    spec = dataclasses.replace(plan.spec, training=dataclasses.replace(plan.training, precision=precision))
    fuzzing.assert_finite_prediction(predict(dataclasses.replace(plan, spec=spec, device=device)))


@pytest.mark.parametrize("examples", SIZES)
def test_fuzz_profile_loader(examples):
    assert fuzz(fuzzing.profile_texts(), check_profile, examples) >= examples


# ----------------------------------------------------------------------------- history files
def check_history(text: str) -> None:
    from simkit.cli import cli
    from simkit.track import history

    path = TMP / "history.jsonl"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    loaded = _loads_or_one_line_errors(history.load_records, path)
    runner = CliRunner()
    for args in (["list"], ["show", "last"], ["check"]):
        result = runner.invoke(cli, ["history", *args, "--history", str(path)])
        assert result.exit_code in (0, 1, 2), (args, result.output, result.exception)
        assert result.exception is None or isinstance(result.exception, SystemExit), (args, result.exception)
        if loaded is None:
            assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.output


@pytest.mark.parametrize("examples", SIZES)
def test_fuzz_history_loader(examples):
    assert fuzz(fuzzing.history_texts(), check_history, examples) >= examples


# ----------------------------------------------------------------------------- published cases
def check_published(text: str) -> None:
    from simkit.validate import published

    path = TMP / "published.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    cases = _loads_or_one_line_errors(published.load_published_files, [path])
    if cases:
        scored = published.score_published(cases)
        for row in scored["skipped"]:
            assert "\n" not in row["reason"]


@pytest.mark.parametrize("examples", SIZES)
def test_fuzz_published_loader(examples):
    assert fuzz(fuzzing.published_texts(), check_published, examples) >= examples


# ----------------------------------------------------------------------------- the CLI around a loader
@pytest.mark.parametrize("examples", [pytest.param(40, id="fast"), pytest.param(1000, id="slow", marks=pytest.mark.slow)])
def test_fuzz_predict_cli_exits_0_or_2_with_one_line_per_error(examples):
    from simkit.cli import cli

    runner = CliRunner()

    def check_predict_cli(text: str) -> None:
        path = TMP / "cli-plan.yml"
        path.write_text(text, encoding="utf-8", errors="surrogatepass")
        result = runner.invoke(cli, ["predict", str(path)])
        assert result.exit_code in (0, 2), (result.output, result.exception)
        if result.exit_code == 2:
            assert result.stdout == ""
            assert all(line.startswith("error: ") for line in result.stderr.splitlines()), result.stderr

    assert fuzz(fuzzing.plan_texts(), check_predict_cli, examples) >= examples
