"""simkit's FLOP counts against torch.utils.flop_counter.FlopCounterMode on the real PyTorch model
that `simkit validate` trains (simkit/measure/training.py)."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from simkit.measure.training import Transformer  # noqa: E402
from simkit.model.precision import policy  # noqa: E402
from simkit.model.workload import Shape, parameter_count, transformer_ops  # noqa: E402


@pytest.mark.parametrize("mlp", ["gelu", "swiglu"])
@pytest.mark.parametrize("n_kv_heads", [4, 2])
def test_forward_and_backward_flops_match_flop_counter(mlp, n_kv_heads):
    m = dict(n_layers=2, d_model=64, n_heads=4, n_kv_heads=n_kv_heads, d_ff=96, mlp=mlp, vocab_size=101,
             seq_len=16, causal=False, tied_embeddings=True, attention="eager")
    batch = 3
    model = Transformer(m)
    tokens = torch.randint(0, m["vocab_size"], (batch, m["seq_len"]))
    counter = FlopCounterMode(display=False)
    with counter:
        model(tokens, tokens).backward()
    w = transformer_ops(Shape(batch, m["seq_len"], m["d_model"], m["n_heads"], n_kv_heads, m["d_ff"],
                              m["vocab_size"], m["n_layers"]), mlp=mlp, causal=False, attention="eager",
                        prec=policy("fp32"))
    forward = sum(g.flops * (m["n_layers"] if g.per_layer else 1) for g in w.gemms)
    # FlopCounterMode counts matmuls only; a GEMM's backward is two GEMMs of the same FLOPs
    assert counter.get_total_flops() == pytest.approx(3 * forward, rel=1e-12)
    params = parameter_count(m["n_layers"], m["d_model"], m["n_heads"], n_kv_heads, m["d_ff"], m["vocab_size"],
                             mlp, True)
    assert params == sum(p.numel() for p in model.parameters())
