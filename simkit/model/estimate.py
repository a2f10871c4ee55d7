"""The quick compute-bound estimate: training FLOPs ~= 6 x parameters x tokens (Kaplan et al. 2020,
"Scaling Laws for Neural Language Models", Sec. 2.1: C ~= 6 N D, forward 2N + backward 4N per token),
delivered at peak x MFU by every device."""
from __future__ import annotations

from dataclasses import dataclass

from simkit.hardware import load_device

DEFAULT_MFU = 0.4   # assumption: well-tuned dense training reaches 35-60% MFU (e.g. llm-foundry 40-64% on A100)


@dataclass
class Estimate:
    params: float
    tokens: float
    devices: int
    device: str
    precision: str
    mfu: float
    peak_flop_per_s: float
    training_flop: float
    time_s: float
    device_hours: float


def estimate(*, params: float, tokens: float, device: str, devices: int, mfu: float = DEFAULT_MFU,
             precision: str = "bf16") -> Estimate:
    dev = load_device(device)
    peak = dev.peak(precision)
    if peak is None:
        from simkit.core.errors import SimkitError

        raise SimkitError(f"device {device!r} has no {precision} peak; allowed: {', '.join(dev.peak_flop_per_s)}",
                          key="--precision")
    flop = 6.0 * params * tokens
    time_s = flop / (devices * peak * mfu)
    return Estimate(params, tokens, devices, device, precision, mfu, peak, flop, time_s, time_s * devices / 3600)
