"""What every simkit plot shares: a headless matplotlib Figure (no pyplot, no display, no global state),
saving by file extension (PNG or SVG), readable units on the axes and one colour per step part and
memory kind, so that the same part has the same colour in every picture.

The figure functions of the sibling modules (`plot_step`, `plot_scaling`, `plot_hardware`, `plots`) build
and return a `matplotlib.figure.Figure`; the CLI saves it with `save_figure`. Nothing here prints."""
from __future__ import annotations

import io
from pathlib import Path

from simkit.core.errors import SimkitError

FORMATS = (".png", ".svg")
DPI = 120

# Colours of the step parts and memory kinds (matplotlib's tab10/tab20 palette: distinguishable, and
# readable in grey scale by lightness).
PART_COLORS = {"forward": "#1f77b4", "backward": "#ff7f0e", "recompute": "#ffbb78", "optimizer": "#2ca02c",
               "pipeline_bubble": "#c7c7c7", "communication_exposed": "#d62728", "other": "#9467bd"}
MEMORY_COLORS = {"weights": "#1f77b4", "gradients": "#ff7f0e", "optimizer_states": "#2ca02c",
                 "activations": "#d62728", "buffers": "#9467bd"}
SPARE_COLORS = ("#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def new_figure(width_in: float, height_in: float, *, rows: int = 1, cols: int = 1):
    """(figure, axes) drawn by the Agg renderer: works without a display, in threads, in tests."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, [ax for row in axes for ax in row]


def check_output(path: str | Path) -> Path:
    """The output path, refused before any work when its extension is not a supported format."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise SimkitError(f"cannot tell the image format from {path.name!r}; allowed: a file name ending in "
                          + " or ".join(FORMATS), file=str(path))
    return path


def save_figure(fig, path: str | Path) -> Path:
    """Write `fig` as PNG or SVG, chosen by the extension of `path`, whole or not at all
    (matplotlib's savefig writes in place, piece by piece; core.files.write_atomic does not)."""
    import io

    from simkit.core.files import write_atomic

    path = check_output(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, format=path.suffix[1:].lower(), metadata=_metadata(path))
    write_atomic(path, buffer.getvalue())
    return path


def png_bytes(fig) -> bytes:
    """`fig` as PNG bytes (for embedding in the HTML report)."""
    buf = io.BytesIO()
    fig.savefig(buf, dpi=DPI, format="png", metadata=_metadata(Path("x.png")))
    return buf.getvalue()


def _metadata(path: Path) -> dict:
    # No creation date in the files: the same command gives the same bytes (diffable in git).
    return {"Software": "simkit"} if path.suffix.lower() == ".png" else {"Creator": "simkit", "Date": None}


def color_for(key: str, palette: dict[str, str], seen: list[str]) -> str:
    """The fixed colour of a known key; keys the palette does not know get spare colours in order."""
    if key in palette:
        return palette[key]
    if key not in seen:
        seen.append(key)
    return SPARE_COLORS[seen.index(key) % len(SPARE_COLORS)]


def time_unit(seconds: float) -> tuple[float, str]:
    """(multiplier, unit) to show durations around `seconds`: s from 1 s up, else ms."""
    return (1.0, "s") if seconds >= 1 else (1e3, "ms")


def number(value: float) -> str:
    """3350 -> '3,350', 9.245 -> '9.24': 3 significant digits, thousands separated."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def si_number(value: float) -> str:
    """12500 -> '12.5k', 3e6 -> '3M', 0.5 -> '0.5': tick labels a person reads at a glance."""
    for factor, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:g}{suffix}"
    return f"{value:g}"


def plain_log_axis(axis) -> None:
    """A log axis labelled 1, 2, 5 x 10^n in plain numbers (12.5k, not 1.25 x 10^4)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: si_number(v)))
    axis.set_minor_formatter(NullFormatter())


def binary_bytes(value: float) -> str:
    """4096 -> '4 KiB', 2**26 -> '64 MiB'."""
    for exponent, unit in ((40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")):
        if value >= 2**exponent:
            return f"{value / 2**exponent:g} {unit}"
    return f"{value:g} B"


def bytes_axis(axis) -> None:
    """A log axis of sizes in bytes with ticks at powers of 4, labelled KiB, MiB, GiB."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=4.0, numticks=12))
    axis.set_major_formatter(FuncFormatter(lambda v, _: binary_bytes(v)))
    axis.set_minor_formatter(NullFormatter())


def label_of(key: str) -> str:
    """'communication_exposed' -> 'communication exposed'."""
    return key.replace("_", " ")


def short(text: str, n: int) -> str:
    """Cut from the middle: labels often differ only at the end (e.g. the hardware in parentheses)."""
    if len(text) <= n:
        return text
    head = (n - 1) // 2
    return text[:head] + "…" + text[len(text) - (n - 1 - head):]
