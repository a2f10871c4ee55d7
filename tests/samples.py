"""Hand-written test inputs shared by several test files."""

# A calibrated device profile, lines: 1 name 2 kind 3 description 4 memory_gib 5 bandwidth
# 6 peak_tflops 7 fp32 (tests append their own lines after these and rely on these numbers).
CALIBRATED_PROFILE_HEAD = """\
name: my-gpu
kind: device
description: a calibrated test device
memory_gib: {value: 16, source: "measured by simkit calibrate on testhost 2026-01-01"}
memory_bandwidth_gb_per_s: {value: 500, source: "measured by simkit calibrate on testhost 2026-01-01"}
peak_tflops:
  fp32: {value: 10, dense: true, source: "measured by simkit calibrate on testhost 2026-01-01"}
"""
