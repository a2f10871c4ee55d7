"""The report opens in a real browser: headless Chromium loads report.html, the screenshot is not blank,
nothing failed to load and nothing was fetched from a network.

Chromium is a Debian package (`apt-get install chromium`); `.ci/run` installs it. On a developer's machine
without it these tests are skipped with a reason; under CI (CI or SIMKIT_CI set) a missing browser fails."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from simkit.cli import cli

from browser import Chromium, blank, find_chromium

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    executable = find_chromium()
    if executable is None:
        if os.environ.get("CI") or os.environ.get("SIMKIT_CI"):
            pytest.fail("no Chromium on PATH under CI: .ci/run installs it (apt-get install chromium)")
        pytest.skip("no Chromium on PATH (install it with `apt-get install chromium`, or set SIMKIT_CHROMIUM); "
                    "CI runs this test")
    with Chromium(executable, tmp_path_factory.mktemp("chromium-profile")) as browser:
        yield browser


def test_report_renders_in_chromium(chromium, runner, tmp_path):
    out = tmp_path / "report.html"
    result = runner.invoke(cli, ["report", str(EXAMPLES / "llama3-70b-64xh100.yml"), "--nodes", "4,8,16",
                                 "--output", str(out)])
    assert result.exit_code == 0, result.output
    page = chromium.check(out.as_uri())
    assert page.failed == []
    assert len(page.images) == 3 and all(image["width"] > 500 for image in page.images)
    assert all(url.startswith(("file:", "data:")) for url in page.requests)          # no network
    is_blank, spread, drawn = blank(page.screenshot_png)
    assert not is_blank, f"blank screenshot: grey-level spread {spread:.3f}, {100 * drawn:.1f} % of pixels drawn"
    (tmp_path / "report.png").write_bytes(page.screenshot_png)


def test_the_check_catches_missing_resources_and_blank_pages(chromium, tmp_path):
    """The two checks above must be able to fail: a broken image and an empty page."""
    broken = tmp_path / "broken.html"
    broken.write_text('<html><body><h1>Title</h1><img src="missing.png">'
                      '<img src="data:image/png;base64,AAAA"></body></html>', encoding="utf-8")
    page = chromium.check(broken.as_uri())
    assert any("missing.png: net::ERR_FILE_NOT_FOUND" in f for f in page.failed), page.failed
    assert "image data:image/png;base64,AAAA did not load" in page.failed
    empty = tmp_path / "empty.html"
    empty.write_text("<html><body></body></html>", encoding="utf-8")
    assert blank(chromium.check(empty.as_uri()).screenshot_png)[0]
