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

# An H100 profile as `simkit calibrate --comm --nproc 8` would write it, with numbers easy to check by hand.
H100_PROFILE = """\
name: calibrated-h100
kind: device
description: NVIDIA H100 80GB HBM3, calibrated
memory_gib: {value: 79.1, source: "measured by simkit calibrate on gpuhost"}
memory_bandwidth_gb_per_s: {value: 2900, source: "measured by simkit calibrate on gpuhost"}
peak_tflops:
  bf16: {value: 700, dense: true, source: "measured by simkit calibrate on gpuhost"}
  fp32: {value: 50, dense: true, source: "measured by simkit calibrate on gpuhost"}
calibration:
  date: "2026-11-30T12:00:00Z"
  environment: {host: gpuhost, device_name: NVIDIA H100 80GB HBM3, threads: 8}
  settings: {device: cuda, quick: false, threads: 8}
  matmul:
    bf16:
      - {m: 1024, n: 1024, k: 1024, flop_per_s_median: 4.0e+14, flop_per_s_iqr: 1.0e+12, samples: 9}
      - {m: 8192, n: 8192, k: 8192, flop_per_s_median: 7.0e+14, flop_per_s_iqr: 1.0e+12, samples: 9}
      - {m: 16384, n: 16384, k: 16384, flop_per_s_median: 7.0e+14, flop_per_s_iqr: 0, samples: 9,
         extrapolated: true, extrapolated_from: 8192x8192x8192}
    fp32:
      - {m: 4096, n: 4096, k: 4096, flop_per_s_median: 5.0e+13, flop_per_s_iqr: 1.0e+11, samples: 9}
  memory_bandwidth:
    copy:
      - {bytes: 4194304, bytes_per_s_median: 1.5e+12, bytes_per_s_iqr: 1.0e+10, samples: 9}
      - {bytes: 1073741824, bytes_per_s_median: 2.9e+12, bytes_per_s_iqr: 1.0e+10, samples: 9}
  collectives:
    backend: nccl
    nproc: 8
    all_reduce:
      latency_us: 20.0
      bus_bandwidth_gb_per_s: 360
      points:
        - {bytes: 1048576, time_s_median: 1.0e-4}
        - {bytes: 1073741824, time_s_median: 5.2e-3}
"""
