"""The model's few free parameters: multipliers of what the catalogue or a calibrated profile says.

Every default is 1.0: the prediction as the hardware data and the mechanisms give it. `simkit fit`
estimates them from a user's measured runs and writes them into a profile overlay (a device file with a
`fitted:` section, see docs/DESIGN.md); a device loaded from such a file carries them in
`Device.fitted`, and the cost and communication models apply them:

- gemm       sustained matmul throughput (cost.matmul_rate)
- attention  fused-attention throughput (cost.attention_rates)
- memory     achieved bandwidth of memory-bound kernels and the optimizer (cost.bandwidth)
- network    bus bandwidth of collectives and point-to-point sends (comm/collectives.py)
- overlap    the share of the communication the model hides that really hides (1 = as modelled,
             0 = nothing hides); applied to the step's hidden communication (step.py)
"""
from __future__ import annotations

NAMES = ("gemm", "attention", "memory", "network", "overlap")
BOUNDS = {"gemm": (0.2, 2.0), "attention": (0.1, 4.0), "memory": (0.1, 4.0), "network": (0.05, 4.0),
          "overlap": (0.0, 1.0)}
"""What a fitted value may be: rates from a fifth to twice (attention, memory, network: wider, their
catalogue defaults are rougher), overlap a share."""


def value(device, name: str) -> float:
    """A device's fitted multiplier `name` (1.0 when it has none)."""
    fitted = getattr(device, "fitted", None) or {}
    return float(fitted.get(name, 1.0))
