"""A node of several devices without a named intra-node link gets the device's native link (a
sourced field of its device file), and `predict` says which one it assumed."""
from __future__ import annotations

import pytest

from simkit import hardware as hw
from simkit.model.step import predict
from simkit.plan import load_plan

PLAN = """\
model: {n_layers: 2, d_model: 256, n_heads: 4, vocab_size: 1000, seq_len: 128}
training: {global_batch_size: 64, micro_batch_size: 8, precision: %s}
hardware:
  device: %s
  devices_per_node: 8
"""


@pytest.mark.parametrize("device, link", [("a100-80gb", "nvlink3"), ("a100-40gb", "nvlink3"), ("h100-sxm", "nvlink4"),
                                          ("h200", "nvlink4"), ("b200", "nvlink5"), ("v100-32gb", "nvlink2"),
                                          ("h100-pcie", "pcie5"), ("l40s", "pcie4"), ("rtx-4090", "pcie4"),
                                          ("t4", "pcie3"), ("mi300x", "xgmi"), ("mi250x", "xgmi")])
def test_the_native_link_is_assumed_and_said(write, device, link):
    plan = load_plan(write(PLAN % ("fp16", device)))
    assert plan.intra_node.name == link == plan.hw.intra_node
    assert predict(plan).assumptions == [
        f"intra-node link: {link}, the native link of {device} (its device file, native_link); set "
        "hardware.intra_node to use another"]


def test_every_gpu_in_the_catalogue_has_a_sourced_native_link():
    for name in hw.catalogue_names("device"):
        device = hw.load_device(name)
        if name == "cpu":
            assert device.native_link is None
            continue
        assert device.native_link in hw.catalogue_names("interconnect"), name
        assert device.sources["native_link"].strip(), name


def test_a_named_link_or_a_system_is_not_an_assumption(write):
    named = load_plan(write(PLAN % ("bf16", "a100-80gb") + "  intra_node: pcie4\n"))
    assert named.intra_node.name == "pcie4" and named.assumptions == ()
    set_ = load_plan(write(PLAN % ("bf16", "a100-80gb")), ["hardware.intra_node=nvlink4"])
    assert set_.intra_node.name == "nvlink4" and set_.assumptions == ()
    system = load_plan({"model": {"n_layers": 2, "d_model": 256, "n_heads": 4, "vocab_size": 1000, "seq_len": 128},
                        "training": {"global_batch_size": 64, "micro_batch_size": 8},
                        "hardware": {"system": "dgx-h100"}})
    assert system.intra_node.name == "nvlink4" and system.assumptions == ()


def test_one_device_needs_no_link(write):
    plan = load_plan(write(PLAN % ("bf16", "a100-80gb")), ["hardware.devices_per_node=1"])
    assert plan.intra_node is None and plan.assumptions == ()


def test_predict_prints_the_assumed_link(write, runner):
    from simkit.cli import cli

    result = runner.invoke(cli, ["predict", str(write(PLAN % ("bf16", "h100-sxm")))])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == ("assumed: intra-node link: nvlink4, the native link of h100-sxm (its "
                                              "device file, native_link); set hardware.intra_node to use another")
    assert "intra-node nvlink4" in result.stdout


def test_bad_native_link_in_a_profile_is_one_line(write):
    from samples import CALIBRATED_PROFILE_HEAD
    from simkit.core.errors import SimkitError

    profile = write(CALIBRATED_PROFILE_HEAD + "native_link: {value: nvlink9, source: my notes}\n", "p.yaml")
    with pytest.raises(SimkitError) as info:
        hw.load_device(str(profile))
    assert str(info.value) == (f"{profile}:8: native_link.value: unknown interconnect 'nvlink9'; did you mean "
                               "'nvlink5' or 'nvlink4' or 'nvlink3'?")
