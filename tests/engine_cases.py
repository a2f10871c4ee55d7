"""Random valid configurations for checking that speed work on `simulate` changes no output.

`cases()` yields (name, Categorical, Numeric) over several example plans and non-numeric choices, with a few
hundred random valid layouts each (tensor/pipeline/context/virtual parallel, nodes, micro-batch,
accumulation, sequence length, layers). `flatten(simulate(...))` turns the result into name -> array.

tests/data/engine_golden.npz holds the inputs and outputs as simulate computed them when it was written:
    PYTHONPATH=. python tests/engine_cases.py        # rewrites tests/data/engine_golden.npz
Rewrite it on a commit whose outputs are right (after a change of the model's mechanisms), never to make a
speed change pass.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "data" / "engine_golden.npz"
ROWS = 400

# (case name, example plan, --set overrides of the non-numeric choices)
CASES = (
    ("llama70b-zero1", "llama3-70b-64xh100.yml", ()),
    ("llama70b-zero3-full-nosp", "llama3-70b-64xh100.yml", ("parallelism.zero_stage=3", "parallelism.sequence_parallel=false",
                                                            "training.activation_checkpointing=full")),
    ("llama70b-overlap-fp8-sel", "llama3-70b-64xh100.yml", ("parallelism.tp_comm_overlap=true", "training.precision=fp8",
                                                            "training.activation_checkpointing=selective")),
    ("llama70b-zero2-layers", "llama3-70b-64xh100.yml", ("parallelism.zero_stage=2", "training.activation_checkpointing=selective",
                                                         "training.selective_checkpointing=layers",
                                                         "training.checkpoint_every_n_layers=3")),
    ("llama7b-fsdp", "llama2-7b-fsdp-8xa100.yml", ()),
    ("llama7b-fsdp-eager-ops", "llama2-7b-fsdp-8xa100.yml", ("model.kernels=eager", "training.activation_checkpointing=selective",
                                                            "training.selective_checkpointing=ops")),
    ("bert-dgx-a100", "bert-large-dgx-a100.yml", ()),
    ("bert-fp16-zero0", "bert-large-dgx-a100.yml", ("training.precision=fp16", "parallelism.zero_stage=0",
                                                    "model.attention=eager")),
    ("gpt2-4090", "gpt2-124m-rtx4090.yml", ()),
    ("gpt2-4090-fp32-sgd", "gpt2-124m-rtx4090.yml", ("training.precision=fp32", "training.optimizer=sgd",
                                                     "training.cross_entropy=fp32", "model.dropout=0.1")),
    ("neox-epochs", "gpt-neox-20b-epochs.yml", ()),
    ("megatron-1t", "megatron-1t-3072xa100.yml", ()),
)
LAYOUT = ("n_layers", "seq_len", "micro_batch_size", "grad_accum_steps", "global_batch_size", "data_parallel",
          "tensor_parallel", "pipeline_parallel", "virtual_pipeline_stages", "context_parallel", "nodes")


def _random_layouts(plan, rng, rows: int) -> dict[str, np.ndarray]:
    from simkit.search.engine import numeric_columns, reasons

    m, h = plan.model, plan.hw
    n = rows * 8
    tp = rng.choice([1, 2, 4, 8], n).astype(float)
    pp = rng.choice([1, 1, 2, 4, 8], n).astype(float)
    cp = rng.choice([1, 1, 2, 4], n).astype(float) if m.attention == "fused" else np.ones(n)
    layers = rng.choice([m.n_layers, max(1, m.n_layers // 2), m.n_layers + 3], n).astype(float)
    vp = np.where(pp > 1, rng.integers(1, 6, n), 1).astype(float)
    seq = rng.choice([m.seq_len, m.seq_len // 2, 2 * m.seq_len], n).astype(float)
    mp = tp * pp * cp
    per_node = h.devices_per_node
    nodes = np.maximum(1.0, np.ceil(mp / per_node)) * rng.choice([1, 2, 4], n) if per_node > 1 else mp
    dp = per_node * nodes / mp
    mb = rng.choice([1, 2, 4], n).astype(float)
    accum = rng.integers(1, 9, n).astype(float)
    given = {"model.n_layers": layers, "model.seq_len": seq, "training.micro_batch_size": mb,
             "training.grad_accum_steps": accum, "training.global_batch_size": mb * accum * dp,
             "parallelism.data_parallel": dp, "parallelism.tensor_parallel": tp, "parallelism.pipeline_parallel": pp,
             "parallelism.virtual_pipeline_stages": vp, "parallelism.context_parallel": cp, "hardware.nodes": nodes}
    cols = numeric_columns(plan, given, n)
    ok = np.flatnonzero(reasons(cols, list(given), m.attention) == "")[:rows]
    return {k: v[ok] for k, v in cols.items()}


def cases(rows: int = ROWS, inputs: dict | None = None):
    """(name, Categorical, Numeric) per case; `inputs` (name -> {field: array}) replays stored layouts."""
    from simkit.model.step import Numeric, categorical
    from simkit.plan import load_plan

    rng = np.random.default_rng(13)
    fields = {f.name for f in dataclasses.fields(Numeric)}
    for name, example, sets in CASES:
        plan = load_plan(ROOT / "examples" / example, sets)
        if inputs is not None:
            num = Numeric(**inputs[name])
        else:
            cols = _random_layouts(plan, rng, rows)
            values = {k.split(".", 1)[1]: v for k, v in cols.items() if "." in k and k.split(".", 1)[1] in fields}
            tokens = plan.tokens_per_epoch
            num = Numeric(**values, tokens_per_epoch=np.full(len(cols["model.d_model"]),
                                                              np.nan if tokens is None else float(tokens)))
        yield name, categorical(plan), num


def flatten(result: dict, prefix: str = "") -> dict[str, np.ndarray]:
    """simulate's result as name -> float array (dataclasses such as the memory breakdown and the placement
    groups flattened to 'memory.weights', 'placement.pipeline.nodes', ...)."""
    out = {}
    for key, value in result.items():
        name = f"{prefix}{key}"
        if dataclasses.is_dataclass(value):
            out.update(flatten({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, name + "."))
        elif isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = np.asarray(value, dtype=float)
    return out


def numeric_inputs(num) -> dict[str, np.ndarray]:
    return {f.name: np.asarray(getattr(num, f.name), dtype=float) for f in dataclasses.fields(num)}


def write_golden() -> None:
    from simkit.model.step import simulate

    store = {}
    for name, c, num in cases():
        for key, value in numeric_inputs(num).items():
            store[f"{name}|in|{key}"] = value
        for key, value in flatten(simulate(c, num)).items():
            store[f"{name}|out|{key}"] = value
    np.savez_compressed(GOLDEN, **store)
    print(f"wrote {GOLDEN} ({len(store)} arrays)")


def load_golden() -> tuple[dict, dict]:
    """({case: {Numeric field: array}}, {case: {output: array}})."""
    data = np.load(GOLDEN)
    inputs: dict = {}
    outputs: dict = {}
    for key in data.files:
        name, kind, field = key.split("|")
        (inputs if kind == "in" else outputs).setdefault(name, {})[field] = data[key]
    return inputs, outputs


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    write_golden()
