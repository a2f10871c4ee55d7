"""`simkit hardware list|show|plot`: the hardware catalogue as readable tables, one entry with every
value, its unit and its source, and a picture of what a calibrated profile measured."""
from __future__ import annotations

import click

from simkit import hardware as hw
from simkit.core.errors import SimkitError, close_names
from simkit.report.terminal import render_grid

# (file key, unit, SI -> file-unit divisor) for the scalar facts shown by `show`
_DEVICE_FACTS = (("memory_gib", "GiB", "memory_bytes", hw.GIB),
                 ("memory_bandwidth_gb_per_s", "GB/s", "memory_bandwidth_bytes_per_s", hw.GB),
                 ("memory_bandwidth_efficiency", "of peak", "memory_bandwidth_efficiency", 1.0),
                 ("price_per_hour_usd", "USD/h", "price_per_hour_usd", 1.0))


def _num(value: float | None, digits: int = 4) -> str:
    """A number as written by a person: 312, 19.5, 0.869; '-' when absent."""
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if abs(value) < 10**digits else f"{value:.0f}"


def _short(text: str, width: int = 46) -> str:
    """The first sentence of a description, cut to `width` characters for a table cell."""
    first = text.split(". ")[0].rstrip(".")
    return first if len(first) <= width else first[: width - 3].rstrip() + "..."


# ----------------------------------------------------------------------------- list
def _device_rows() -> str:
    headers = ["name", "description", "memory(GiB)", "bandwidth(GB/s)"]
    headers += [f"{d}(TFLOP/s)" for d in hw.DTYPES] + ["matmul_eff"]
    rows = []
    for name in hw.catalogue_names("device"):
        d = hw.load_device(name)
        peaks = [_num(p / hw.TFLOP if (p := d.peak(t)) else None) for t in hw.DTYPES]
        rows.append([d.name, _short(d.description), _num(d.memory_bytes / hw.GIB),
                     _num(d.memory_bandwidth_bytes_per_s / hw.GB)] + peaks + [_num(d.efficiency("default"), 3)])
    return render_grid(headers, rows, right=set(range(2, len(headers))))


def _interconnect_rows() -> str:
    headers = ["name", "description", "bandwidth(GB/s per direction)", "latency(us)", "efficiency"]
    rows = []
    for name in hw.catalogue_names("interconnect"):
        i = hw.load_interconnect(name)
        rows.append([i.name, _short(i.description), _num(i.bandwidth_bytes_per_s / hw.GB), _num(i.latency_s * 1e6),
                     _num(i.efficiency, 3)])
    return render_grid(headers, rows, right={2, 3, 4})


def _system_rows() -> str:
    headers = ["name", "device", "devices/node", "intra-node", "inter-node"]
    rows = []
    for name in hw.catalogue_names("system"):
        s = hw.load_system(name)
        inter = f"{s.inter_node} x {s.inter_node_links}" if s.inter_node else "-"
        rows.append([s.name, s.device, str(s.devices_per_node), s.intra_node or "-", inter])
    return render_grid(headers, rows, right={2})


_LISTERS = {"device": ("Devices (dense peak)", _device_rows),
            "interconnect": ("Interconnects", _interconnect_rows),
            "system": ("Systems", _system_rows)}


# ----------------------------------------------------------------------------- show
def _fact_lines(key: str, value: float | None, unit: str, source: str, missing: str = "not given") -> list[str]:
    if value is None:
        return [f"  {key:<32} - ({missing})"]
    return [f"  {key:<32} {_num(value, 6)} {unit}", f"      source: {source or '-'}"]


def _show_device(d: hw.Device) -> list[str]:
    lines = [f"device {d.name}: {d.description}", f"  file: {d.path}"]
    for key, unit, attr, scale in _DEVICE_FACTS:
        value = getattr(d, attr)
        lines += _fact_lines(key, None if value is None else value / scale, unit, d.sources.get(key, ""))
    for dtype in hw.DTYPES:
        peak = d.peak(dtype)
        lines += _fact_lines(f"peak_tflops.{dtype}", None if peak is None else peak / hw.TFLOP,
                             "TFLOP/s (dense)", d.sources.get(f"peak_tflops.{dtype}", ""), "not supported")
    for key, value in d.matmul_efficiency.items():
        source = d.sources.get(f"matmul_efficiency.{key}", "not given; 1.0 assumed" if key == "default" else "")
        lines += _fact_lines(f"matmul_efficiency.{key}", value, "of dense peak", source)
    if d.native_link:
        lines += [f"  {'native_link':<32} {d.native_link} (the intra-node link when a plan names none)",
                  f"      source: {d.sources.get('native_link') or '-'}"]
    if d.calibration is not None:
        lines += _show_calibration(d.calibration)
    return lines


def _show_calibration(c: hw.Calibration) -> list[str]:
    lines = [f"  calibration (measured {c.date or 'at an unknown date'})"]
    for key, value in c.environment.items():
        lines.append(f"    environment.{key}: {value}")
    for dtype, points in c.matmul.items():
        best = max(points, key=lambda p: p.flop_per_s, default=None)
        if best is not None:
            lines.append(f"    matmul.{dtype}: {len(points)} shapes, best {_num(best.flop_per_s / hw.TFLOP)} TFLOP/s "
                         f"at {best.m}x{best.n}x{best.k}")
    for pattern, points in c.memory_bandwidth.items():
        if points:
            lines.append(f"    memory_bandwidth.{pattern}: {len(points)} sizes, best "
                         f"{_num(max(p[1] for p in points) / hw.GB)} GB/s")
    if c.attention:
        lines.append(f"    attention: {len(c.attention)} shapes")
    for name, fit in c.collectives.items():
        lines.append(f"    collectives.{name}: latency {_num(fit.latency_s * 1e6)} us, bus bandwidth "
                     f"{_num(fit.bus_bandwidth_bytes_per_s / hw.GB)} GB/s ({fit.backend}, {fit.nproc} processes)"
                     + (f"; measured times used from {_num(fit.points[0][0] / 2**10)} KiB to "
                        f"{_num(fit.points[-1][0] / 2**20)} MiB at {fit.nproc} processes" if len(fit.points) >= 2 else ""))
    return lines


def _show_interconnect(i: hw.Interconnect) -> list[str]:
    lines = [f"interconnect {i.name}: {i.description}"]
    lines += _fact_lines("bandwidth_gb_per_s", i.bandwidth_bytes_per_s / hw.GB, "GB/s per direction",
                         i.sources.get("bandwidth_gb_per_s", ""))
    lines += _fact_lines("latency_us", i.latency_s * 1e6, "us", i.sources.get("latency_us", ""))
    lines += _fact_lines("efficiency", i.efficiency, "of spec bandwidth (achieved bus bandwidth)",
                         i.sources.get("efficiency", ""))
    return lines


def _show_system(s: hw.System) -> list[str]:
    inter = f"{s.inter_node} x {s.inter_node_links} links per node" if s.inter_node else "- (single node)"
    return [f"system {s.name}: {s.description}",
            f"  {'device':<32} {s.device}",
            f"  {'devices_per_node':<32} {s.devices_per_node} devices",
            f"  {'intra_node':<32} {s.intra_node or '-'}",
            f"  {'inter_node':<32} {inter}",
            f"  source: {s.source}"]


def _find(name: str) -> list[str]:
    """Lines describing `name`: a catalogue entry of any kind, or a (calibrated) profile path."""
    if hw.looks_like_path(name):
        return _show_device(hw.load_device(name))
    for kind, show in (("device", _show_device), ("interconnect", _show_interconnect), ("system", _show_system)):
        if name in hw.catalogue_names(kind):
            return show(hw.load_entry(kind, name))
    every = [n for _, n in hw.list_catalogue()]
    # names that extend what was typed ('h100' -> h100-pcie, h100-sxm) beat difflib's spelling matches
    extended = [n for n in every if n.startswith(name)][:4]
    hint = "did you mean " + " or ".join(map(repr, extended)) + "?" if extended else close_names(name, every)
    raise SimkitError(f"unknown hardware {name!r} (not a device, interconnect or system in the catalogue); {hint}")


# ----------------------------------------------------------------------------- commands
@click.group("hardware")
def hardware_cmd() -> None:
    """List and show the hardware catalogue; plot what a calibrated profile measured."""


@hardware_cmd.command("list")
@click.option("--kind", type=click.Choice(hw.KINDS), default=None, help="Only this kind of entry.")
def list_cmd(kind: str | None) -> None:
    """Tables of the catalogue: devices, interconnects and systems."""
    kinds = (kind,) if kind else hw.KINDS
    blocks = []
    for k in kinds:
        title, rows = _LISTERS[k]
        blocks.append(f"{title}\n{rows()}")
    click.echo("\n\n".join(blocks))


@hardware_cmd.command("show")
@click.argument("name")
def show_cmd(name: str) -> None:
    """Every value of NAME (a catalogue entry, or a calibrated profile path) with its unit and source."""
    click.echo("\n".join(_find(name)))


@hardware_cmd.command("plot")
@click.argument("profile", type=click.Path(dir_okay=False))
@click.option("--reference", default=None, metavar="DEVICE",
              help="Catalogue device whose datasheet peaks to draw [default: the catalogue entry matching a GPU "
                   "profile's device name; none for CPU profiles, whose catalogue entry is a placeholder].")
@click.option("--output", "-o", type=click.Path(dir_okay=False), default=None,
              help="Image to write, .png or .svg [default: <profile>-hardware.png].")
def plot_cmd(profile: str, reference: str | None, output: str | None) -> None:
    """What `simkit calibrate` measured in PROFILE: matmul throughput against GEMM size per dtype, memory
    bandwidth against working set, collective bus bandwidth against message size, each against the
    profile's and the reference device's peaks."""
    from pathlib import Path

    from simkit.report import figures
    from simkit.report.plot_hardware import hardware_figure

    path = figures.check_output(output or f"{Path(profile).stem}-hardware.png")
    device = hw.load_device(profile)
    if device.calibration is None:
        raise SimkitError(f"{profile} is not a calibrated profile (no calibration section); write one with "
                          "`simkit calibrate --output FILE`", file=profile)
    ref = hw.load_device(reference) if reference else _matching_catalogue_device(device)
    figures.save_figure(hardware_figure(device, ref), path)
    cal = device.calibration
    drawn = [f"matmul {', '.join(cal.matmul)}", f"bandwidth {', '.join(p for p, pts in cal.memory_bandwidth.items() if pts)}"]
    fits = list(cal.collectives) + [f"{k} across nodes" for k in cal.collectives_inter]
    drawn.append(f"collectives {', '.join(fits)}" if fits else "no collectives (calibrate --comm measures them)")
    click.echo(f"wrote {path}: {'; '.join(drawn)}")
    click.echo(f"reference peaks: {ref.name} datasheet" if ref else "reference peaks: none (give --reference DEVICE)")


def _matching_catalogue_device(device: hw.Device) -> hw.Device | None:
    """The catalogue GPU a CUDA profile was measured on (by its device name); None for CPUs and unknown GPUs."""
    from simkit.measure.calibrate import match_catalogue

    cal = device.calibration
    if (cal.raw.get("settings") or {}).get("device") != "cuda":
        return None
    name = match_catalogue(str(cal.environment.get("device_name", "")), hw.catalogue_names("device"))
    return hw.load_device(name) if name else None
