"""The vectorized engine: speed work changes no output, rows equal single plans, sweeps derive like plans."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_cases import cases, flatten, load_golden  # noqa: E402

from simkit.model.step import Numeric, predict, simulate  # noqa: E402
from simkit.plan import load_plan  # noqa: E402
from simkit.search.sweep import run_sweep  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
INPUTS, OUTPUTS = load_golden()


def _same(got: np.ndarray, want: np.ndarray, rel: float = 1e-9) -> bool:
    got, want = np.broadcast_arrays(np.asarray(got, dtype=float), np.asarray(want, dtype=float))
    both_nan = np.isnan(got) & np.isnan(want)
    close = np.isclose(got, want, rtol=rel, atol=0.0) | both_nan | (got == want)
    return bool(close.all())


@pytest.mark.parametrize("name", sorted(INPUTS))
def test_simulate_outputs_equal_the_recorded_ones(name):
    """Every output of simulate on ~400 random valid layouts per case equals what the engine computed before
    its speed work (tests/data/engine_golden.npz, see tests/engine_cases.py) to 1e-9 relative."""
    (c, num), = [(c, n) for case, c, n in cases(inputs=INPUTS) if case == name]
    got = flatten(simulate(c, num))
    want = OUTPUTS[name]
    assert set(got) == set(want)
    bad = [key for key in want if not _same(got[key], want[key])]
    assert not bad, f"{name}: outputs differ: {bad}"


@pytest.mark.parametrize("name", sorted(INPUTS)[::3])
def test_rows_equal_the_same_layout_simulated_alone(name):
    """The per-shape and per-row sharing of the vectorized path gives each row what a one-row call gives."""
    (c, num), = [(c, n) for case, c, n in cases(inputs=INPUTS) if case == name]
    whole = flatten(simulate(c, num))
    for row in range(0, len(num.n_layers), 37):
        one = Numeric(**{k: float(np.broadcast_to(v, num.n_layers.shape)[row])
                         for k, v in vars(num).items()})
        alone = flatten(simulate(c, one))
        bad = [k for k in alone if not _same(np.broadcast_to(whole[k], num.n_layers.shape)[row], alone[k])]
        assert not bad, f"{name} row {row}: {bad}"


def test_sweep_derives_the_kernels_per_row_like_predict():
    """A plan that names no kernels runs eager ops with DDP and fused kernels with tensor parallelism: a sweep
    over tensor_parallel gives each row what predict gives the plan with that layout."""
    plan = EXAMPLES / "gpt2-124m-rtx4090.yml"
    sets = ("hardware.devices_per_node=8", "hardware.intra_node=pcie4", "parallelism.data_parallel=null",
            "training.grad_accum_steps=null", "training.global_batch_size=256", "training.micro_batch_size=4")
    sweep = run_sweep(plan, ["parallelism.tensor_parallel=1,2,4"], sets)
    assert (sweep["reason"] == "").all()
    kernels = []
    for row in sweep.itertuples():
        one = load_plan(plan, sets + (f"parallelism.tensor_parallel={row[1]}",))
        kernels.append(one.model.kernels)
        assert row.step_time_s == pytest.approx(predict(one).step_time_s, rel=1e-12)
        assert row.memory_per_device_bytes == pytest.approx(predict(one).memory_per_device_bytes, rel=1e-12)
    assert kernels == ["eager", "fused", "fused"]
