"""pytest-benchmark settings for simkit: machine_info records what the numbers were measured on."""
from __future__ import annotations

import os
import platform


def pytest_benchmark_update_machine_info(config, machine_info):
    machine_info["simkit_threads"] = os.cpu_count()
    machine_info["device_name"] = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    machine_info["device_name"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import torch

        machine_info["torch_version"] = torch.__version__
        machine_info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            machine_info["device_name"] = torch.cuda.get_device_name(0)
    except ImportError:
        machine_info["torch_version"] = None
