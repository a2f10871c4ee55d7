"""Shared fixtures: a way to write files into tmp_path, and a CLI runner."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner


@pytest.fixture
def write(tmp_path):
    """write(text, name='plan.yml') -> path of a new file in tmp_path holding `text`."""

    def _write(text: str, name: str = "plan.yml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return _write


@pytest.fixture
def runner():
    return CliRunner()
