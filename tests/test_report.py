"""`simkit report`: one self-contained HTML page (read back as text here; tests/test_report_browser.py
opens it in Chromium)."""
from __future__ import annotations

import base64
import math
import re
from pathlib import Path

from simkit.cli import cli
from simkit.core.units import human_duration
from simkit.model.step import predict
from simkit.model.uncertainty import known_errors
from simkit.plan import load_plan

from samples import H100_PROFILE

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LLAMA = EXAMPLES / "llama3-70b-64xh100.yml"


def _report(runner, tmp_path, *args) -> str:
    out = tmp_path / "report.html"
    result = runner.invoke(cli, ["report", *map(str, args), "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"wrote {out}: ")
    return out.read_text(encoding="utf-8")


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'<img alt="[^"]+" src="data:image/png;base64,([A-Za-z0-9+/=]+)">',
                                                     page)]


def test_report_is_self_contained_and_holds_every_part(runner, tmp_path):
    page = _report(runner, tmp_path, LLAMA, "--nodes", "4,8,16")
    pred = predict(load_plan(LLAMA))
    images = _images(page)
    assert len(images) == 3 and all(png.startswith(b"\x89PNG") for png in images)   # breakdown, memory, scaling
    # nothing fetched from elsewhere: no URL in any src or href, no script, no external style sheet
    assert not re.search(r'(src|href)="(?!data:image/png;base64,|#)', page)
    assert "<script" not in page and "<link" not in page
    low, high = pred.step_time_interval_s
    assert human_duration(pred.step_time_s) in page
    assert f"likely {human_duration(low)} to {human_duration(high)}" in page          # the interval
    assert f"{pred.tokens_per_s:,.0f} tokens/s" in page and f"{100 * pred.mfu:.1f} %" in page
    for heading in ("Prediction", "Where the step time goes", "Memory per device", "Scaling over node counts",
                    "Hardware", "How accurate is this?", "The plan", "Reproduce"):
        assert f">{heading}</h2>" in page
    # the hardware with the provenance of its numbers
    assert "h100-sxm</b> (catalogue entry)" in page and "ib-ndr" in page and "datasheet" in page.lower()
    # the model's validated accuracy for catalogue hardware, with where that number comes from
    error = known_errors()["catalogue"]
    low_pct, high_pct = (100 * (math.exp(error[k]) - 1) for k in ("low", "high"))
    assert f"between <b>{low_pct:+.1f} %</b> and <b>{high_pct:+.1f} %</b>" in page
    assert error["source"].split(":")[0] in page
    # the plan file as written, escaped, and the commands that reproduce the page
    assert "# Llama 3 70B pre-training on 8 DGX H100 nodes" in page
    assert f"simkit report {LLAMA} --nodes 4,8,16 --output {tmp_path / 'report.html'}" in page
    assert f"simkit plot scaling {LLAMA} --nodes 4,8,16 -o scaling.png" in page
    scaling_rows = re.findall(r"<tr><td class=num>(\d+)</td><td class=num>(\d+)</td>", page)
    assert scaling_rows == [("4", "32"), ("8", "64"), ("16", "128")]


def test_report_on_a_calibrated_profile_shows_what_was_measured(runner, tmp_path, write):
    profile = write(H100_PROFILE, "h100.yaml")
    page = _report(runner, tmp_path, LLAMA, "--set", f"hardware.device={profile}", "--nodes", "8")
    assert len(_images(page)) == 4                                   # and the calibration's plot
    assert "(calibrated profile)" in page and "measured by simkit calibrate on gpuhost" in page
    error = known_errors()["calibrated"]
    low_pct, high_pct = (100 * (math.exp(error[k]) - 1) for k in ("low", "high"))
    assert "calibrated profiles, the measured step time" in page and f"<b>{high_pct:+.1f} %</b>" in page
    assert f"<b>{low_pct:+.1f} %</b>" in page
    assert "name: calibrated-h100" in page                           # the profile travels with the page
    assert f"simkit hardware plot {profile} -o hardware.png" in page
    assert "--set hardware.device=" in page


def test_report_without_a_valid_scaling_point_still_writes_the_page(runner, tmp_path):
    page = _report(runner, tmp_path, LLAMA, "--nodes", "1,2")
    assert "No scaling curve:" in page and "does not divide the devices" in page
    assert len(_images(page)) == 2


def test_report_escapes_what_it_quotes(runner, tmp_path, write):
    text = (EXAMPLES / "tiny-cpu.yml").read_text(encoding="utf-8").replace(
        "# A tiny decoder", "# <b>not bold</b> & a tiny decoder")
    page = _report(runner, tmp_path, write(text, "odd.yml"), "--nodes", "1")
    assert "# &lt;b&gt;not bold&lt;/b&gt; &amp; a tiny decoder" in page and "<b>not bold</b>" not in page
