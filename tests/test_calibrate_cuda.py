"""The CUDA path of simkit calibrate, run on the CPU: torch.cuda's device queries, events and
synchronize are mocked, and tensors stay on the CPU (Target.tensor_device), so every CUDA branch
(dtype selection by compute capability, TF32 switching, event timing, device facts) executes."""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

import simkit.measure  # noqa: E402
from simkit.measure import calibrate as cal  # noqa: E402
from simkit.hardware import load_device  # noqa: E402
from simkit.measure import Target  # noqa: E402
from simkit.measure.attention import AttentionShape  # noqa: E402

H100 = SimpleNamespace(name="NVIDIA H100 80GB HBM3", total_memory=80 * 2**30, major=9, minor=0,
                       multi_processor_count=132, L2_cache_size=50 * 2**20)


class FakeEvent:
    """torch.cuda.Event on the host clock; counts records."""

    records = 0

    def __init__(self, enable_timing: bool = False):
        assert enable_timing
        self.at = None

    def record(self, stream=None):
        FakeEvent.records += 1
        self.at = time.perf_counter()

    def synchronize(self):
        pass

    def elapsed_time(self, end: FakeEvent) -> float:
        return (end.at - self.at) * 1e3  # milliseconds, like CUDA events


@pytest.fixture
def fake_cuda(monkeypatch):
    precisions = []
    real_matmul = torch.matmul

    def matmul(a, b, out=None):
        precisions.append((a.dtype, torch.get_float32_matmul_precision()))
        return real_matmul(a, b, out=out)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=0: H100)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=0: (H100.major, H100.minor))
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch, "matmul", matmul)
    monkeypatch.setattr(Target, "tensor_device", property(lambda self: "cpu"))
    monkeypatch.setattr(simkit.measure, "nvidia_smi_facts", lambda: {
        "driver_version": "570.86.15", "max_sm_clock_mhz": 1980.0, "max_memory_clock_mhz": 2619.0,
        "power_limit_w": 700.0})
    FakeEvent.records = 0
    return precisions


def cuda_plan() -> cal.Plan:
    return cal.Plan(gemm_sizes=(16, 32), bandwidth_sizes=(64 * 1024,),
                    attention_shapes=(AttentionShape(batch=1, heads=2, seq_len=32, head_dim=16, dtype="bf16"),),
                    seconds={"matmul": 0.3, "bandwidth": 0.05, "attention": 0.05, "collectives": 0},
                    min_samples=3, max_samples=4, max_warmup_s=0.0, min_sample_s=1e-4)


def test_cuda_calibration_runs_every_cuda_branch(fake_cuda, tmp_path):
    result = cal.run(cal.Settings(device="cuda", quick=True, threads=1), plan=cuda_plan())

    assert [d for d in ("fp32", "tf32", "fp16", "bf16", "fp8") if d in cal.best_peaks(result)] == \
        ["fp32", "tf32", "fp16", "bf16", "fp8"]  # capability 9.0 has them all
    assert FakeEvent.records > 0  # timed with CUDA events
    fp32_precisions = {p for dtype, p in fake_cuda if dtype == torch.float32}
    assert fp32_precisions == {"highest", "high"}  # fp32 rows with TF32 off, tf32 rows with it on
    assert torch.get_float32_matmul_precision() == "highest"  # restored

    env = result.environment
    assert env["device_name"] == "NVIDIA H100 80GB HBM3" and env["compute_capability"] == "9.0"
    assert env["cuda_version"] == "12.8" and env["driver_version"] == "570.86.15"
    assert env["memory_bytes"] == 80 * 2**30 and env["last_level_cache_bytes"] == 50 * 2**20

    path = tmp_path / "h100.yaml"
    path.write_text(cal.profile_text(result))
    device = load_device(str(path))
    assert device.memory_bytes == 80 * 2**30
    assert set(device.peak_flop_per_s) == {"fp32", "tf32", "fp16", "bf16", "fp8"}
    assert "torch.cuda" in device.sources["memory_gib"]
    assert cal.history_record(result)["fingerprint"]["driver_version"] == "570.86.15"


def test_older_gpus_lose_tf32_and_fp8(fake_cuda, monkeypatch):
    from simkit.measure.gemm import supported_dtypes

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=0: (7, 0))  # V100
    assert supported_dtypes(Target(kind="cuda", threads=1)) == ["fp32", "fp16", "bf16"]
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=0: (8, 0))  # A100
    assert supported_dtypes(Target(kind="cuda", threads=1)) == ["fp32", "tf32", "fp16", "bf16"]


def test_cuda_plan_uses_gpu_sizes():
    plan = cal.default_plan(cal.Settings(device="cuda", quick=True, threads=1), 50 * 2**20, 80 * 2**30)
    assert plan.gemm_sizes == (64, 8192)
    assert 2**30 in plan.bandwidth_sizes
    assert all(s.dtype in ("bf16", "fp16") for s in plan.attention_shapes)


def test_comm_on_cuda_needs_a_gpu_per_process(fake_cuda, monkeypatch):
    from simkit.core.errors import SimkitError

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(SimkitError, match="2 processes need as many GPUs; this machine has 1"):
        cal.check_settings(cal.Settings(device="cuda", threads=1, comm=True, nproc=2))
