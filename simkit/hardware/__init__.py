"""Hardware as data: the sourced catalogue (`catalogue.py`), calibrated profiles (`profile.py`) and the
types both produce (`types.py`)."""
from __future__ import annotations

from simkit.hardware.catalogue import (catalogue_dir, catalogue_names, list_catalogue, load_device, load_entry,
                                       load_interconnect, load_system, looks_like_path, parse_device)
from simkit.hardware.types import (DTYPES, GB, GIB, KINDS, TFLOP, Calibration, CollectiveFit, Device, Interconnect, MatmulPoint,
                                   System)

__all__ = ["DTYPES", "GB", "GIB", "KINDS", "TFLOP", "Calibration", "CollectiveFit", "Device", "Interconnect", "MatmulPoint", "System",
           "catalogue_dir", "catalogue_names", "list_catalogue", "load_device", "load_entry", "load_interconnect",
           "load_system", "looks_like_path", "parse_device"]
