"""Every shipped data file loads through the real loaders, every number has a source, and a few
values are pinned to the published documents they come from."""
from __future__ import annotations

from pathlib import Path

import pytest

from simkit import hardware as hw
from simkit.cli import cli
from simkit.plan import load_plan, model_presets
from simkit.core.yamlio import read_yaml

REPO = Path(__file__).resolve().parent.parent
HARDWARE = REPO / "hardware"
FOLDERS = {"devices": "device", "interconnects": "interconnect", "systems": "system"}
HARDWARE_FILES = sorted(HARDWARE.glob("*/*.yaml"))
EXAMPLES = sorted([*REPO.glob("examples/**/*.yml"), *REPO.glob("examples/**/*.yaml")])

REQUIRED = {
    "device": ["v100-16gb", "v100-32gb", "a100-40gb", "a100-80gb", "h100-sxm", "h100-pcie", "h200", "b200", "l4",
               "l40s", "a10", "t4", "rtx-3090", "rtx-4090", "mi250x", "mi300x", "cpu"],
    "interconnect": ["nvlink2", "nvlink3", "nvlink4", "nvlink5", "pcie3", "pcie4", "pcie5", "ib-edr", "ib-hdr",
                     "ib-ndr", "roce-100g", "roce-200g", "roce-400g", "eth-10g", "eth-25g", "eth-100g", "xgmi"],
    "system": ["dgx-1-v100-16gb", "dgx-1-v100-32gb", "dgx-2", "dgx-a100-40gb", "dgx-a100-80gb", "dgx-h100",
               "dgx-h200", "dgx-b200"],
}


def _id(path: Path) -> str:
    return str(path.relative_to(REPO))


def test_the_checkout_catalogue_is_the_one_loaded():
    assert hw.catalogue_dir().resolve() == HARDWARE.resolve()
    assert HARDWARE_FILES, "no hardware/*/*.yaml files"


# ----------------------------------------------------------------------------- every file loads
@pytest.mark.parametrize("path", HARDWARE_FILES, ids=_id)
def test_hardware_file_loads(path):
    kind = FOLDERS[path.parent.name]
    entry = hw.load_entry(kind, path.stem)
    assert entry.name == path.stem, "the file stem must equal `name`"


@pytest.mark.parametrize("path", [p for p in HARDWARE_FILES if p.parent.name != "systems"], ids=_id)
def test_every_number_has_a_source(path):
    """Devices and interconnects hold no bare numbers: each is {value, source[, dense]}."""

    def walk(node, where):
        if isinstance(node, dict) and "value" in node:
            assert isinstance(node.get("source"), str) and node["source"].strip(), f"{where}: no source"
            assert set(node) <= {"value", "source", "dense"}, f"{where}: {set(node)}"
            if where.startswith("peak_tflops."):
                assert node.get("dense") is True, f"{where}: the catalogue stores dense peaks, marked dense: true"
        elif isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{where}.{key}" if where else str(key))
        else:
            assert isinstance(node, (str, bool)) or node is None, f"{where}: bare number {node!r} without a source"

    walk(read_yaml(path).data, "")


@pytest.mark.parametrize("name", hw.catalogue_names("system"))
def test_system_parts_exist(name):
    system = hw.load_system(name)
    assert system.source.strip()
    hw.load_device(system.device)
    if system.intra_node:
        hw.load_interconnect(system.intra_node)
    if system.inter_node:
        hw.load_interconnect(system.inter_node)
    assert system.devices_per_node == 1 or system.intra_node, "several devices need an intra-node link"


def test_two_pcie_boxes():
    boxes = [n for n in hw.catalogue_names("system") if (hw.load_system(n).intra_node or "").startswith("pcie")]
    assert len(boxes) >= 2, boxes


@pytest.mark.parametrize("name", sorted(model_presets()))
def test_model_preset_loads(name):
    preset = model_presets()[name]
    assert isinstance(preset.get("source"), str) and preset["source"].strip(), "every preset cites a source"
    plan = load_plan({"model": {"preset": name}, "training": {"global_batch_size": 1, "micro_batch_size": 1},
                      "hardware": {"device": "h100-sxm"}})
    assert plan.model.n_layers > 0


# For plans that leave the device out on purpose (examples/validation: `simkit validate --profile`
# supplies the calibrated profile of the machine that measures).
PROFILE = """\
name: test-cpu
kind: device
memory_gib: {value: 16, source: "measured by simkit calibrate on testhost 2026-01-01"}
memory_bandwidth_gb_per_s: {value: 20, source: "measured by simkit calibrate on testhost 2026-01-01"}
peak_tflops:
  fp32: {value: 0.5, dense: true, source: "measured by simkit calibrate on testhost 2026-01-01"}
  bf16: {value: 0.5, dense: true, source: "measured by simkit calibrate on testhost 2026-01-01"}
calibration:
  collectives: {backend: gloo, nproc: 2, all_reduce: {latency_us: 50.0, bus_bandwidth_gb_per_s: 3.1}}
"""


@pytest.mark.parametrize("path", EXAMPLES, ids=_id)
def test_example_plan_loads(path, write):
    hardware = read_yaml(path).data.get("hardware") or {}
    overrides = []
    if "device" not in hardware and "system" not in hardware:
        overrides = [f"hardware.device={write(PROFILE, 'profile.yaml')}"]
    plan = load_plan(path, overrides)
    assert plan.n_devices >= 1


def test_there_are_examples():
    assert EXAMPLES


# ----------------------------------------------------------------------------- required names
def test_required_names_are_listed(runner):
    result = runner.invoke(cli, ["hardware", "list"])
    assert result.exit_code == 0, result.output
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    missing = [name for names in REQUIRED.values() for name in names if name not in listed]
    assert not missing, f"missing from `simkit hardware list`: {missing}"


@pytest.mark.parametrize("kind", sorted(REQUIRED))
def test_required_names_have_the_right_kind(kind):
    assert set(REQUIRED[kind]) <= set(hw.catalogue_names(kind))


# ----------------------------------------------------------------------------- known answers
# (getter, expected, tolerance, citation). Dense figures: NVIDIA datasheets print the 2:4-sparse
# number with an asterisk; the dense number is half of it.
KNOWN = [
    ("a100 bf16", lambda: hw.load_device("a100-80gb").peak("bf16"), 312e12, 0.0,
     "NVIDIA A100 Tensor Core GPU datasheet: BF16 Tensor Core 312 TFLOPS (624 with sparsity)"),
    ("a100-40gb bf16", lambda: hw.load_device("a100-40gb").peak("bf16"), 312e12, 0.0,
     "NVIDIA A100 datasheet: the 40 GB and 80 GB SXM parts have the same tensor peak"),
    ("h100 sxm bf16", lambda: hw.load_device("h100-sxm").peak("bf16"), 989e12, 0.001,
     "NVIDIA H100 Tensor Core GPU datasheet, SXM: BF16 Tensor Core 1,979 TFLOPS with sparsity -> 989.5 dense"),
    ("h100 sxm fp8", lambda: hw.load_device("h100-sxm").peak("fp8"), 1979e12, 0.001,
     "NVIDIA H100 datasheet, SXM: FP8 Tensor Core 3,958 TFLOPS with sparsity -> 1,979 dense"),
    ("v100 fp16", lambda: hw.load_device("v100-32gb").peak("fp16"), 125e12, 0.0,
     "NVIDIA Tesla V100 datasheet, SXM2: Tensor Performance 125 TFLOPS"),
    ("a100-80gb bandwidth", lambda: hw.load_device("a100-80gb").memory_bandwidth_bytes_per_s, 2039e9, 0.0,
     "NVIDIA A100 datasheet: A100 80GB SXM GPU memory bandwidth 2,039 GB/s"),
    ("h100 sxm bandwidth", lambda: hw.load_device("h100-sxm").memory_bandwidth_bytes_per_s, 3.35e12, 0.0,
     "NVIDIA H100 datasheet, SXM: GPU memory bandwidth 3.35 TB/s"),
    ("nvlink3 per direction", lambda: hw.load_interconnect("nvlink3").bandwidth_bytes_per_s, 300e9, 0.0,
     "NVIDIA A100 datasheet: NVLink 600 GB/s per GPU, both directions together -> 300 GB/s each way"),
    ("ib-ndr", lambda: hw.load_interconnect("ib-ndr").bandwidth_bytes_per_s, 50e9, 0.0,
     "InfiniBand NDR: 400 Gb/s per port = 50 GB/s per direction"),
    ("dgx h100 nics", lambda: (hw.load_system("dgx-h100").inter_node, hw.load_system("dgx-h100").inter_node_links),
     ("ib-ndr", 8), None,
     "NVIDIA DGX H100 datasheet: 8x single-port NVIDIA ConnectX-7 VPI, 400 Gb/s InfiniBand"),
    ("dgx h100 gpus", lambda: (hw.load_system("dgx-h100").device, hw.load_system("dgx-h100").devices_per_node),
     ("h100-sxm", 8), None, "NVIDIA DGX H100 datasheet: 8x NVIDIA H100 Tensor Core GPUs (SXM5)"),
    ("dgx a100 nics",
     lambda: (hw.load_system("dgx-a100-80gb").inter_node, hw.load_system("dgx-a100-80gb").inter_node_links),
     ("ib-hdr", 8), None, "NVIDIA DGX A100 datasheet: 8x single-port Mellanox ConnectX-6 VPI, 200 Gb/s HDR InfiniBand"),
]


@pytest.mark.parametrize("get, expected, rel, citation", [k[1:] for k in KNOWN], ids=[k[0] for k in KNOWN])
def test_known_answer(get, expected, rel, citation):
    if rel is None:
        assert get() == expected, citation
    else:
        assert get() == pytest.approx(expected, rel=rel, abs=0), citation
