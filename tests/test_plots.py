"""Every plot rendered headless, its content read back from the figure: axis labels, how many series,
and bar and point values against the numbers they were drawn from. Files are written too (PNG and SVG)
and read back."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from simkit import hardware as hw
from simkit.cli import cli
from simkit.core.units import human_bytes
from simkit.model.step import predict
from simkit.plan import load_plan
from simkit.report import figures, plot_hardware, plot_scaling, plot_step, plots
from simkit.search.scaling import scaling_table
from simkit.search.sweep import run_sweep
from simkit.validate.published import load_published, score_published

from samples import H100_PROFILE

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
LLAMA = EXAMPLES / "llama3-70b-64xh100.yml"
PUBLISHED = Path(__file__).parent / "data" / "published-dev.yaml"
GIB = 2**30


def _containers(ax) -> dict[str, list[float]]:
    """Bar widths by series label (horizontal bars: the value is the width)."""
    return {c.get_label(): [patch.get_width() for patch in c.patches] for c in ax.containers}


def _line(ax, label: str):
    return next(line for line in ax.get_lines() if line.get_label() == label)


def _saved(fig, tmp_path, name: str) -> bytes:
    data = figures.save_figure(fig, tmp_path / name).read_bytes()
    assert data.startswith(b"\x89PNG" if name.endswith(".png") else b"<?xml")
    return data


# ----------------------------------------------------------------------------- step breakdown
def test_breakdown_of_one_plan_reads_back_the_predicted_seconds(tmp_path):
    pred = predict(load_plan(LLAMA))
    fig = plot_step.breakdown_figure([("llama", pred.breakdown_s)], title="llama3")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "time per optimizer step (s)" and ax.get_title() == "llama3"
    bars = _containers(ax)
    # recompute and other are zero in this plan: left out; communication_total is not a slice of the step
    assert list(bars) == ["forward", "backward", "optimizer", "pipeline bubble", "communication exposed"]
    assert bars["backward"] == [pytest.approx(pred.breakdown_s["backward"])]
    assert sum(w[0] for w in bars.values()) == pytest.approx(pred.step_time_s)
    texts = [t.get_text() for t in ax.texts]
    share = f"{100 * pred.breakdown_s['backward'] / pred.step_time_s:.0f}%"
    assert f"{pred.step_time_s:.3g} s" in texts and share in texts       # backward's share written on the bar
    assert b"llama3" in _saved(fig, tmp_path, "b.svg")


def test_breakdown_of_a_sweep_has_one_bar_per_configuration_fastest_first():
    frame = run_sweep(LLAMA, ["training.micro_batch_size=1,2", "parallelism.tensor_parallel=4,8"])
    items = plot_step.sweep_items(frame, ["training.micro_batch_size", "parallelism.tensor_parallel"], top=3)
    assert [label for label, _ in items] == ["mb=2, tp=4", "mb=1, tp=4", "mb=2, tp=8"]
    ax = plot_step.breakdown_figure(items).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["mb=2, tp=4", "mb=1, tp=4", "mb=2, tp=8"]
    bars = _containers(ax)
    assert all(len(widths) == 3 for widths in bars.values())
    steps = sorted(frame["step_time_s"])[:3]
    assert [sum(w[i] for w in bars.values()) for i in range(3)] == pytest.approx(steps)
    assert ax.yaxis_inverted()                                             # the first (fastest) bar on top


def test_breakdown_below_a_second_is_in_milliseconds():
    pred = predict(load_plan(EXAMPLES / "tiny-cpu.yml", ["training.micro_batch_size=1", "training.global_batch_size=1"]))
    ax = plot_step.breakdown_figure([("tiny", pred.breakdown_s)]).axes[0]
    assert pred.step_time_s < 1 and ax.get_xlabel() == "time per optimizer step (ms)"
    assert _containers(ax)["forward"] == [pytest.approx(1e3 * pred.breakdown_s["forward"])]


# ----------------------------------------------------------------------------- memory
def test_memory_bars_by_kind_against_capacity(tmp_path):
    pred = predict(load_plan(LLAMA))
    fig = plot_step.memory_figure([("llama", pred.memory_breakdown_bytes)], pred.memory_capacity_bytes)
    ax = fig.axes[0]
    assert ax.get_xlabel() == "memory per device (GiB)"
    bars = _containers(ax)
    assert list(bars) == ["weights", "gradients", "optimizer states", "activations", "buffers"]
    assert bars["activations"] == [pytest.approx(pred.memory_breakdown_bytes["activations"] / GIB)]
    assert _line(ax, "capacity 80 GiB").get_xdata()[0] == pytest.approx(80)
    assert not any("does not fit" in t.get_text() for t in ax.texts)
    _saved(fig, tmp_path, "m.png")


def test_memory_over_capacity_says_so():
    pred = predict(load_plan(LLAMA))
    half = pred.memory_per_device_bytes / 2                 # a device with half the memory the plan needs
    ax = plot_step.memory_figure([("big", pred.memory_breakdown_bytes), ("small", {"weights": half / 2})], half).axes[0]
    verdicts = [t.get_text() for t in ax.texts]
    assert verdicts[0].endswith("GiB - does not fit") and not verdicts[1].endswith("does not fit")


# ----------------------------------------------------------------------------- scaling
def test_scaling_plot_draws_the_predicted_and_ideal_curves(tmp_path):
    table = scaling_table(LLAMA, [1, 4, 8, 16, 32])
    fig = plot_scaling.scaling_figure(table, mark_devices=64)
    tput, eff = fig.axes
    assert (tput.get_xlabel(), tput.get_ylabel()) == ("devices", "throughput (tokens/s)")
    assert (eff.get_xlabel(), eff.get_ylabel()) == ("devices", "scaling efficiency (%)")
    valid = table[table["reason"] == ""]
    predicted = _line(tput, "predicted")
    assert list(predicted.get_xdata()) == [32, 64, 128, 256]                # 1 node (8 GPUs) cannot hold TP4 PP4 CP2
    assert list(predicted.get_ydata()) == pytest.approx(list(valid["tokens_per_s"]))
    ideal = _line(tput, "ideal (linear)").get_ydata()
    assert ideal[3] / ideal[1] == pytest.approx(4)                            # linear in devices
    assert list(_line(eff, "predicted").get_ydata()) == pytest.approx(list(100 * valid["scaling_efficiency"]))
    assert any(y == pytest.approx(100) for y in _line(eff, "predicted").get_ydata())   # at the baseline
    table["fits_in_memory"] = table["nodes"] != 4                            # 4 nodes drawn hollow
    fig = plot_scaling.scaling_figure(table, mark_devices=64)
    tput = fig.axes[0]
    assert list(_line(tput, "does not fit in memory").get_xdata()) == [32]
    assert _line(tput, "the plan").get_xdata()[0] == 64
    _saved(fig, tmp_path, "s.png")


# ----------------------------------------------------------------------------- hardware
def test_hardware_plot_of_a_calibrated_gpu(write, tmp_path):
    device = hw.load_device(str(write(H100_PROFILE, "h100.yaml")))
    reference = hw.load_device("h100-sxm")
    fig = plot_hardware.hardware_figure(device, reference)
    mm, bw, coll = fig.axes
    assert mm.get_xlabel().startswith("GEMM size") and mm.get_ylabel() == "achieved throughput (TFLOP/s)"
    measured = _line(mm, "bf16 measured")
    assert list(measured.get_xdata()) == [2 * 1024**3, 2 * 8192**3] and list(measured.get_ydata()) == [400, 700]
    assert list(_line(mm, "bf16 extrapolated").get_xdata()) == [2 * 16384**3]    # drawn hollow
    assert _line(mm, "bf16 peak, h100-sxm datasheet").get_ydata()[0] == pytest.approx(reference.peak("bf16") / 1e12)
    assert bw.get_ylabel() == "achieved bandwidth (GB/s)"
    assert list(_line(bw, "copy").get_ydata()) == [1500, 2900]
    assert _line(bw, "h100-sxm datasheet 3,350 GB/s").get_ydata()[0] == pytest.approx(3350)
    assert coll.get_xlabel() == "message size (bytes)" and coll.get_ylabel() == "bus bandwidth (GB/s)"
    points = _line(coll, "all reduce (8 ranks, nccl)")
    # nccl-tests: busbw = 2 (n-1)/n x bytes / time = 1.75 x 1 MiB / 100 us
    assert points.get_ydata()[0] == pytest.approx(1.75 * 2**20 / 1e-4 / 1e9)
    _saved(fig, tmp_path, "h.png")


def test_hardware_plot_cli_picks_the_datasheet_and_refuses_catalogue_entries(runner, write, tmp_path):
    profile = write(H100_PROFILE, "h100.yaml")
    out = tmp_path / "h.svg"
    result = runner.invoke(cli, ["hardware", "plot", str(profile), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "reference peaks: h100-sxm datasheet" in result.output and "collectives all_reduce" in result.output
    assert b"bus bandwidth (GB/s)" in out.read_bytes()
    refused = runner.invoke(cli, ["hardware", "plot", "h100-sxm", "-o", str(out)])
    assert refused.exit_code == 2 and "is not a calibrated profile" in refused.output


def test_hardware_plot_without_collectives_says_how_to_measure_them(write):
    text = H100_PROFILE[:H100_PROFILE.index("  collectives:")]
    fig = plot_hardware.hardware_figure(hw.load_device(str(write(text, "nocomm.yaml"))))
    assert "simkit calibrate --comm" in fig.axes[2].texts[0].get_text()
    assert not any("datasheet" in line.get_label() for line in fig.axes[0].get_lines())   # no reference given


# ----------------------------------------------------------------------------- accuracy
def _record(plan: str, measured: float, predicted: float, device: str = "AMD EPYC") -> str:
    return json.dumps({"plan_file": plan, "measured": {"step_time_s": measured},
                       "predicted": {"step_time_s": predicted}, "environment": {"device_name": device}})


def test_accuracy_plot_by_source_with_band(runner, tmp_path):
    record = tmp_path / "runs.jsonl"
    record.write_text(_record("a.yml", 1.0, 1.05) + "\n" + _record("b.yml", 2.0, 1.5) + "\n", encoding="utf-8")
    points = plots.published_points(score_published(load_published(PUBLISHED))) + plots.record_points(record)
    fig = plots.predicted_vs_measured_figure(points)
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("measured step time (s)", "predicted step time (s)")
    sources = {p["group"] for p in points}
    assert len(ax.collections) == len(sources) + 1                    # one scatter per source, and the band
    mine = next(c for c in ax.collections if c.get_label().startswith("runs.jsonl (AMD EPYC)"))
    assert mine.get_label().endswith("(n=2, MAPE 15.0%)")              # (5 % + 25 %) / 2
    assert mine.get_offsets().tolist() == [[1.0, 1.05], [2.0, 1.5]]
    upper = [line for line in ax.get_lines() if line.get_linestyle() == "--"][0]
    assert upper.get_ydata()[0] / upper.get_xdata()[0] == pytest.approx(1.1)
    out = tmp_path / "acc.png"
    result = runner.invoke(cli, ["plot", "accuracy", "--published", str(PUBLISHED), "--record", str(record),
                                 "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert f"{len(points)} runs" in result.output and out.read_bytes().startswith(b"\x89PNG")


def test_accuracy_refuses_a_file_that_is_not_a_record(runner, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"plan_file": "a.yml"}\n', encoding="utf-8")
    result = runner.invoke(cli, ["plot", "accuracy", "--record", str(bad)])
    assert result.exit_code == 2
    assert "line 1 is not a `simkit validate --record` line" in result.output


# ----------------------------------------------------------------------------- the plot command
def test_plot_commands_write_the_files_and_print_the_numbers(runner, tmp_path):
    pred = predict(load_plan(LLAMA))
    for args, expected in ((["breakdown", LLAMA], "step time breakdown of 1 configuration"),
                           (["breakdown", LLAMA, "--vary", "training.micro_batch_size=1,2"], "of 2 configurations"),
                           (["memory", LLAMA], f"{human_bytes(pred.memory_per_device_bytes)} per device of 80.00 GiB"),
                           (["scaling", LLAMA, "--nodes", "4,8,16"], "3 of 3 node counts valid")):
        out = tmp_path / f"{args[0]}.png"
        result = runner.invoke(cli, ["plot", *map(str, args), "-o", str(out)])
        assert result.exit_code == 0, result.output
        assert expected in result.output and out.stat().st_size > 10_000
    scaling = result.output.splitlines()
    assert scaling[1].split()[:4] == ["nodes", "devices", "global", "batch"]
    eight = scaling_table(LLAMA, [8]).iloc[0]
    assert scaling[4].split()[:4] == ["8", "64", "128", f"{eight['tokens_per_s']:,.0f}"]
    assert scaling[4].split()[-2:] == ["yes" if eight["fits_in_memory"] else "NO", "-"]


def test_plot_refuses_unknown_formats_and_hopeless_sweeps(runner, tmp_path):
    result = runner.invoke(cli, ["plot", "memory", str(LLAMA), "-o", str(tmp_path / "m.jpg")])
    assert result.exit_code == 2 and "cannot tell the image format from 'm.jpg'; allowed" in result.output
    result = runner.invoke(cli, ["plot", "scaling", str(LLAMA), "--nodes", "1,2"])
    assert result.exit_code == 2
    assert "no node count in 1,2 gives a valid plan: tensor_parallel x pipeline_parallel" in result.output


def test_tick_labels_a_person_reads_at_a_glance():
    assert figures.si_number(12500) == "12.5k" and figures.si_number(3e6) == "3M" and figures.si_number(0.5) == "0.5"
    assert figures.binary_bytes(2**26) == "64 MiB" and figures.binary_bytes(4096) == "4 KiB"
    assert figures.number(3350) == "3,350" and figures.number(9.245) == "9.24"
