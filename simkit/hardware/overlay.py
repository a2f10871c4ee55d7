"""Profile overlays: a device file (the base catalogue device's facts, or a calibrated profile's content)
plus the `fitted:` multipliers `simkit fit` estimated. `overlay_text` builds the file's text and checks
that it loads back; the CLI writes it (atomically). A plan uses it as `hardware.device: fitted.yaml`."""
from __future__ import annotations

import yaml

from simkit.core.errors import SimkitError
from simkit.core.yamlio import parse_yaml, read_yaml
from simkit.model.params import NAMES


def overlay_text(device, values: dict[str, float], stderr: dict[str, float], *, runs: int, note: str,
                 header: str = "") -> str:
    """The overlay of `device` with fitted `values` (others stay at 1.0): the base file's content with its
    `fitted:` section replaced. `note` says what the values were fitted on (it goes into each source)."""
    if not device.path:
        raise SimkitError(f"device {device.name!r} has no file to copy into an overlay")
    data = dict(read_yaml(device.path).data)
    data.pop("fitted", None)
    if values and "(fitted)" not in str(data.get("description", "")):
        data["description"] = f"{data.get('description') or device.name} (fitted)"
    if values:
        data["fitted"] = {name: {"value": _round(values[name]),
                                 "source": f"simkit fit on {runs} run{'s' * (runs != 1)} ({note})",
                                 "stderr": _round(stderr.get(name, float("nan"))), "runs": runs}
                          for name in NAMES if name in values}
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    lines.append(f"# Profile overlay: the facts of {device.path} with the multipliers `simkit fit` estimated "
                 "(simkit/model/params.py).")
    text = "\n".join(lines) + "\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110)
    _check(text)
    return text


def _round(x: float) -> float:
    return float(f"{x:.4g}")


def _check(text: str) -> None:
    """The text must load as a device (a bug otherwise: refuse to write it)."""
    from simkit.hardware.catalogue import parse_device

    parse_device(parse_yaml(text, file="<overlay>"))
