"""Every input that once made a loader fail (tests/fuzz_corpus/) still loads or fails with one line
per error -- the check of the fuzz tests (test_fuzz_loaders.py), replayed on each file."""
from __future__ import annotations

from pathlib import Path

import pytest

import test_fuzz_loaders as fuzz

CORPUS = Path(__file__).parent / "fuzz_corpus"
CHECKS = {"plan": fuzz.check_plan, "profile": fuzz.check_profile, "history": fuzz.check_history,
          "published": fuzz.check_published,
          "set": lambda text: fuzz.check_set([line for line in text.split("\n") if line])}
FILES = sorted(p for p in CORPUS.glob("*/*") if p.parent.name in CHECKS)


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name}" for p in FILES])
def test_corpus_input_loads_or_fails_with_one_line_per_error(path):
    CHECKS[path.parent.name](path.read_text(encoding="utf-8"))


def test_the_corpus_covers_every_loader():
    assert {p.parent.name for p in FILES} == set(CHECKS)
