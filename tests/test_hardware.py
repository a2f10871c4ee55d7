"""Hardware loading (units converted once, at load) and the `simkit hardware list|show` command."""
from __future__ import annotations

import pytest

from simkit import hardware as hw
from simkit.core.errors import SimkitError
from simkit.cli import cli

from samples import CALIBRATED_PROFILE_HEAD

PROFILE = CALIBRATED_PROFILE_HEAD + """\
calibration:
  date: "2026-01-01T00:00:00Z"
  environment: {host: testhost, threads: 2}
  matmul:
    fp32:
      - {m: 1024, n: 1024, k: 1024, flop_per_s_median: 8.0e+12, flop_per_s_iqr: 1.0e+10, samples: 9}
      - {m: 4096, n: 4096, k: 4096, flop_per_s_median: 1.0e+13, flop_per_s_iqr: 1.0e+10, samples: 9}
  memory_bandwidth:
    copy: [{bytes: 67108864, bytes_per_s_median: 4.5e+11, bytes_per_s_iqr: 1.0e+9, samples: 9}]
  collectives:
    backend: gloo
    nproc: 2
    all_reduce: {latency_us: 50.0, bus_bandwidth_gb_per_s: 3.1}
"""


# ----------------------------------------------------------------------------- loading and units
def test_device_units_are_si():
    d = hw.load_device("a100-80gb")
    assert d.memory_bytes == 80 * 2**30                   # memory_gib: GiB = 2**30 bytes
    assert d.memory_bandwidth_bytes_per_s == 2039e9       # GB/s = 1e9 bytes/s
    assert d.peak("bf16") == 312e12                       # TFLOP/s = 1e12 FLOP/s
    assert d.peak("fp8") is None                          # A100 has no fp8 tensor cores
    assert d.efficiency("fp8") == d.efficiency("default")


def test_interconnect_units_are_si():
    link = hw.load_interconnect("ib-ndr")
    assert link.bandwidth_bytes_per_s == 50e9             # 400 Gb/s = 50 GB/s per direction
    assert link.latency_s == pytest.approx(5e-6)


def test_calibrated_profile_loads(write):
    d = hw.load_device(str(write(PROFILE, "cal.yaml")))
    assert d.calibration is not None
    assert d.calibration.collectives["all_reduce"].latency_s == pytest.approx(50e-6)
    assert [p.flop_per_s for p in d.calibration.matmul["fp32"]] == [8e12, 1e13]


def test_list_catalogue_by_kind():
    assert ("device", "a100-80gb") in hw.list_catalogue()
    assert {k for k, _ in hw.list_catalogue("system")} == {"system"}


# ----------------------------------------------------------------------------- simkit hardware list
def _rows(output: str) -> dict[str, list[str]]:
    """First column -> the row's cells (cells are separated by two or more spaces)."""
    import re

    return {cells[0]: cells for line in output.splitlines() if (cells := re.split(r"\s{2,}", line.strip()))}


def test_list_shows_every_kind(runner):
    result = runner.invoke(cli, ["hardware", "list"])
    assert result.exit_code == 0, result.output
    for title in ("Devices", "Interconnects", "Systems"):
        assert title in result.stdout
    for kind, name in hw.list_catalogue():
        assert name in _rows(result.stdout), (kind, name)


def test_list_devices_columns(runner):
    result = runner.invoke(cli, ["hardware", "list", "--kind", "device"])
    assert result.exit_code == 0, result.output
    header = _rows(result.stdout)["name"]
    assert header == ["name", "description", "memory(GiB)", "bandwidth(GB/s)", "fp32(TFLOP/s)", "tf32(TFLOP/s)",
                      "fp16(TFLOP/s)", "bf16(TFLOP/s)", "fp8(TFLOP/s)", "matmul_eff"]
    assert _rows(result.stdout)["a100-80gb"][2:] == ["80", "2039", "19.5", "156", "312", "312", "-", "0.869"]
    v100 = _rows(result.stdout)["v100-16gb"]
    assert v100[header.index("bf16(TFLOP/s)")] == "-"      # no bf16 on Volta
    assert "Interconnects" not in result.stdout and "Systems" not in result.stdout


def test_list_columns_are_aligned(runner):
    lines = runner.invoke(cli, ["hardware", "list", "--kind", "device"]).stdout.splitlines()[1:]
    # every right-aligned number column ends at the same place as its header
    header, rule = lines[0], lines[1]
    ends = [i + 1 for i, (a, b) in enumerate(zip(rule, rule[1:] + " ")) if a == "-" and b == " "]
    for line in lines[2:]:
        for end in ends[2:]:
            assert line[end - 1] != " ", (line, end)
    assert len(header) <= len(rule)


def test_list_interconnects_and_systems(runner):
    links = _rows(runner.invoke(cli, ["hardware", "list", "--kind", "interconnect"]).stdout)
    assert links["ib-ndr"][2:] == ["50", "5", "0.95"]      # GB/s per direction, us, efficiency
    systems = _rows(runner.invoke(cli, ["hardware", "list", "--kind", "system"]).stdout)
    assert systems["dgx-h100"] == ["dgx-h100", "h100-sxm", "8", "nvlink4", "ib-ndr x 8"]


def test_list_unknown_kind_is_clicks_choice_error(runner):
    result = runner.invoke(cli, ["hardware", "list", "--kind", "gpu"])
    assert result.exit_code == 2
    assert "Invalid value for '--kind': 'gpu' is not one of 'device', 'interconnect', 'system'." in result.stderr


# ----------------------------------------------------------------------------- simkit hardware show
def test_show_device_has_every_value_with_unit_and_source(runner):
    result = runner.invoke(cli, ["hardware", "show", "h100-sxm"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("device h100-sxm: NVIDIA H100 SXM5 80GB")
    for line in ("memory_gib                       80 GiB",
                 "memory_bandwidth_gb_per_s        3350 GB/s",
                 "peak_tflops.bf16                 989 TFLOP/s (dense)",
                 "peak_tflops.fp8                  1979 TFLOP/s (dense)",
                 "matmul_efficiency.fp8            0.709 of dense peak"):
        assert f"  {line}\n" in out
    d = hw.load_device("h100-sxm")
    assert out.count("      source: ") == len(d.sources)      # one source line under each value
    for source in d.sources.values():
        assert source in out


def test_show_device_marks_unsupported_dtypes(runner):
    out = runner.invoke(cli, ["hardware", "show", "t4"]).stdout
    assert "  peak_tflops.bf16                 - (not supported)\n" in out


def test_show_interconnect(runner):
    out = runner.invoke(cli, ["hardware", "show", "nvlink3"]).stdout
    assert out.startswith("interconnect nvlink3: ")
    assert "  bandwidth_gb_per_s               300 GB/s per direction\n" in out
    assert "  latency_us                       3.1 us\n" in out
    assert out.count("      source: ") == 3


def test_show_system(runner):
    out = runner.invoke(cli, ["hardware", "show", "dgx-a100-80gb"]).stdout
    assert out.startswith("system dgx-a100-80gb: ")
    assert "  devices_per_node                 8 devices\n" in out
    assert "  inter_node                       ib-hdr x 8 links per node\n" in out
    assert f"  source: {hw.load_system('dgx-a100-80gb').source}\n" in out


def test_show_calibrated_profile_by_path(runner, write):
    path = write(PROFILE, "cal.yaml")
    result = runner.invoke(cli, ["hardware", "show", str(path)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("device my-gpu: a calibrated test device\n")
    assert "      source: measured by simkit calibrate on testhost 2026-01-01\n" in out
    assert "    matmul.fp32: 2 shapes, best 10 TFLOP/s at 4096x4096x4096\n" in out
    assert "    memory_bandwidth.copy: 1 sizes, best 450 GB/s\n" in out
    assert "    collectives.all_reduce: latency 50 us, bus bandwidth 3.1 GB/s (gloo, 2 processes)\n" in out


def test_show_unknown_name_lists_close_names(runner):
    result = runner.invoke(cli, ["hardware", "show", "h100"])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr == ("error: unknown hardware 'h100' (not a device, interconnect or system in the "
                             "catalogue); did you mean 'h100-pcie' or 'h100-sxm'?\n")


def test_show_missing_profile_path(runner):
    result = runner.invoke(cli, ["hardware", "show", "./no-such-profile.yaml"])
    assert result.exit_code == 2
    assert result.stderr == "error: profile file './no-such-profile.yaml' not found\n"


def test_show_bad_profile_is_one_line(runner, write):
    path = write(PROFILE.replace("kind: device", "kind: devise"), "cal.yaml")
    result = runner.invoke(cli, ["hardware", "show", str(path)])
    assert result.exit_code == 2
    assert result.stderr == f"error: {path}:2: kind: 'devise' is not allowed here; expected kind: device\n"


# ----------------------------------------------------------------------------- measured collective points
POINTS = """\
    all_reduce:
      latency_us: 50.0
      bus_bandwidth_gb_per_s: 3.1
      points:
        - {bytes: 16000000, time_s_median: 0.019}
        - {bytes: 1000000, time_s_median: 0.001}
"""


def test_measured_collective_points_are_used_between_and_beyond_them(write):
    from simkit.model.comm.collectives import Fabric, collective_time, measured_time
    from simkit.model.comm.topology import group

    d = hw.load_device(str(write(PROFILE.replace(
        "    all_reduce: {latency_us: 50.0, bus_bandwidth_gb_per_s: 3.1}\n", POINTS), "cal.yaml")))
    points = d.calibration.collectives["all_reduce"].points
    assert points == ((1e6, 0.001), (16e6, 0.019))                       # sorted by size
    # linear between the points; the last two points' slope (1.2 ns/byte) beyond; the smallest below
    assert measured_time(points, 8.5e6) == pytest.approx(0.001 + 7.5e6 * 0.018 / 15e6)   # 10 ms
    assert measured_time(points, 21e6) == pytest.approx(0.019 + 5e6 * 1.2e-9)           # 25 ms
    assert measured_time(points, 1e3) == pytest.approx(0.001)
    fabric = Fabric(d, None, None, 1, 4)
    assert collective_time("all_reduce", 8.5e6, group(2, 1, 4), fabric) == pytest.approx(0.010)
    # 4 ranks were not measured: the alpha-beta fit, its latency scaled by the ring steps (3 instead of 1)
    # + 2 * 3/4 * size / busbw
    assert collective_time("all_reduce", 8.5e6, group(4, 1, 4), fabric) == pytest.approx(3 * 50e-6 + 1.5 * 8.5e6 / 3.1e9)


def test_repeated_collective_sizes_are_refused(write):
    bad = POINTS.replace("bytes: 1000000,", "bytes: 16000000,")
    path = write(PROFILE.replace("    all_reduce: {latency_us: 50.0, bus_bandwidth_gb_per_s: 3.1}\n", bad), "cal.yaml")
    with pytest.raises(SimkitError) as err:
        hw.load_device(str(path))
    assert str(err.value) == (f"{path}:23: calibration.collectives.all_reduce.points: size 16000000 bytes appears "
                              "more than once; each size may appear once")


# ----------------------------------------------------------------------------- measured attention rates
ATTENTION = """\
  attention:
    - {dtype: bf16, seq_len: 128, head_dim: 64, forward_flop_per_s_median: 1.0e+10, backward_flop_per_s_median: 4.0e+9}
    - {dtype: bf16, seq_len: 512, head_dim: 64, forward_flop_per_s_median: 3.0e+10, backward_flop_per_s_median: 1.2e+10}
    - {dtype: bf16, seq_len: 1024, head_dim: 128, forward_flop_per_s_median: 8.0e+10, backward_flop_per_s_median: 6.0e+10}
"""


def test_attention_rate_follows_the_measured_sequence_lengths(write):
    from simkit.model import cost

    d = hw.load_device(str(write(PROFILE.replace("  collectives:", ATTENTION + "  collectives:"), "cal.yaml")))
    # 256 tokens lie half-way between 128 and 512 in log2: half-way between their rates
    fwd, bwd = cost.attention_rates(d, "bf16", 256, 64)
    assert (float(fwd), float(bwd)) == pytest.approx((2.0e10, 8.0e9))
    # beyond the measured lengths the end value holds; head_dim 64 rows serve head_dim 80 (nearest in log2)
    assert float(cost.attention_rates(d, "bf16", 64, 64)[0]) == pytest.approx(1.0e10)
    assert float(cost.attention_rates(d, "bf16", 4096, 80)[1]) == pytest.approx(1.2e10)
    assert float(cost.attention_rates(d, "bf16", 128, 128)[0]) == pytest.approx(8.0e10)   # the only d=128 row
    # vectorized over plans, as the sweep calls it
    rates = cost.attention_rates(d, "bf16", [128, 256, 512], [64, 64, 128])[0]
    assert list(rates) == pytest.approx([1.0e10, 2.0e10, 8.0e10])


# ----------------------------------------------------------------------------- fitted overlays
def test_a_fitted_overlay_scales_the_rates_it_names(write):
    from simkit.model import cost

    base = (hw.catalogue_dir() / "devices" / "a100-80gb.yaml").read_text()
    overlay = write(base + "fitted:\n  gemm: {value: 0.8, source: \"simkit fit on 3 runs\", stderr: 0.02}\n"
                    "  overlap: {value: 0.5, source: \"simkit fit on 3 runs\"}\n", "fitted.yaml")
    fitted, plain = hw.load_device(str(overlay)), hw.load_device("a100-80gb")
    assert fitted.fitted == {"gemm": 0.8, "overlap": 0.5}
    ratio = cost.matmul_rate(fitted, "bf16", 4096, 4096, 4096) / cost.matmul_rate(plain, "bf16", 4096, 4096, 4096)
    assert float(ratio) == pytest.approx(0.8)
    assert float(cost.bandwidth(fitted, 1e9)) == pytest.approx(float(cost.bandwidth(plain, 1e9)))


def test_fitted_overlay_errors_name_the_key(write):
    base = (hw.catalogue_dir() / "devices" / "a100-80gb.yaml").read_text()
    path = write(base + "fitted:\n  gemmm: {value: 0.8, source: x}\n", "bad.yaml")
    with pytest.raises(SimkitError) as err:
        hw.load_device(str(path))
    assert "fitted.gemmm: unknown key; did you mean 'gemm'?" in str(err.value)
    path = write(base + "fitted:\n  overlap: {value: 1.5, source: x}\n", "bad2.yaml")
    with pytest.raises(SimkitError) as err:
        hw.load_device(str(path))
    assert "fitted.overlap.value: 1.5 is above the maximum 1" in str(err.value)
