"""Unit constants and human-readable formatting (used at the edges: CLI and reports)."""
from __future__ import annotations

import math

KIB, MIB, GIB = 2**10, 2**20, 2**30
GB = 1e9
TFLOP = 1e12


def human_duration(seconds: float) -> str:
    """3 d 4 h, 2 h 5 min, 3 min 20 s, 12.3 s, 45.1 ms."""
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, s = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days >= 365:
        return f"{days / 365.25:.1f} years"
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {s} s"


def human_bytes(n: float) -> str:
    if n is None or not math.isfinite(n):
        return "-"
    for unit, size in (("TiB", 2**40), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n:.0f} B"


def human_count(n: float) -> str:
    for unit, size in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{n:.0f}"
