"""Generated bad input for the loader fuzz tests (tests/test_fuzz_loaders.py): hypothesis strategies
that mutate valid plans, profiles, history lines, published-cases files and --set values, as text
and as structures, and the check every loader must pass: it loads (and what it loaded predicts
finite numbers) or it raises a SimkitError whose every line is one error. Anything else -- a
traceback, a hang -- fails the test.
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import yaml
from hypothesis import strategies as st

from simkit.core.errors import SimkitError

DATA = Path(__file__).parent / "data"

# A valid plan using every key and every parallelism form (16 H100s: TP 2 x PP 2 (x 2 virtual) x CP 2 x DP 2).
RICH_PLAN = """\
model:
  n_layers: 8
  d_model: 512
  n_heads: 8
  n_kv_heads: 4
  d_ff: 2048
  mlp: swiglu
  vocab_size: 32000
  seq_len: 1024
  causal: true
  tied_embeddings: false
  attention: fused
data:
  tokens: 1.0e+9
  epochs: 2
training:
  global_batch_size: 64
  micro_batch_size: 2
  precision: bf16
  optimizer: adamw
  activation_checkpointing: selective
  selective_checkpointing: layers
  checkpoint_every_n_layers: 2
parallelism:
  tensor_parallel: 2
  pipeline_parallel: 2
  virtual_pipeline_stages: 2
  context_parallel: 2
  sequence_parallel: true
  tp_comm_overlap: true
  zero_stage: 1
hardware:
  device: h100-sxm
  devices_per_node: 8
  nodes: 2
  intra_node: nvlink4
  inter_node: ib-ndr
  inter_node_links: 8
"""
RICH_PLAN_DATA = yaml.safe_load(RICH_PLAN)

# What a careless or malicious hand puts into YAML: edge numbers, wrong types, YAML's own syntax.
NASTY = [
    "", "0", "-1", "1", "2", "3", "7", "64", "1.5", "1.0e+308", "-1.0e+308", "1e400", "1e-400", ".nan", ".inf",
    "-.inf", "true", "false", "no", "yes", "on", "null", "~", "[]", "{}", "[1, 2]", "{a: 1}", "'x'", '""', "' '",
    "&a 1", "*a", "&a [1, *a]", "!!python/object/apply:os.system ['true']", "!!python/name:os.system",
    "!!binary aGVsbG8=", "!!set {a}", "!!omap [a: 1]", "!foo bar", "0x1F", "0x_", "0o17", "0b101", "1_000",
    "2026-01-01", "2026-13-45", "1:30", "9" * 120, "1" * 5000, "abc", "é", "\\u0000", "'unterminated",
    "[unclosed", "{unclosed", "<<: *a", "? [a]", "---", "...", "%YAML 1.1", "|\n  block", ">-", "#comment", "@x",
    "`x", "- a", "a: b: c", "nvlink4", "cpu", "fp8", "h100-sxm", "dgx-h100", "gpt2-124m", "layers", "selective",
    "tests/data/calibrated-cpu-2x2.yaml", "../../../etc/passwd", "/dev/zero", "/", "0.0", "-0", "1e9", "12e",
]
KEYS = ["n_layers", "d_model", "n_heads", "preset", "model", "data", "training", "parallelism", "hardware",
        "tokens", "samples", "epochs", "seq_len", "system", "device", "nodes", "intra_node", "unknown", "<<", "? x",
        "data_parallel", "zero_stage", "virtual_pipeline_stages", "calibration", "value", "source", "dense",
        "matmul", "collectives", "inter_node", "points", "id", "measured", "step_time_s", "&a k", "*a", ""]


# ----------------------------------------------------------------------------- text mutations
def _mutate_line(lines: list[str], op: str, i: int, token: str, key: str) -> list[str]:
    lines = list(lines)
    if not lines:
        return [token]
    i %= len(lines)
    line = lines[i]
    indent = line[: len(line) - len(line.lstrip())]
    if op == "value" and ":" in line:
        lines[i] = line.split(":", 1)[0] + ": " + token
    elif op == "key" and ":" in line:
        lines[i] = indent + key + ":" + line.split(":", 1)[1]
    elif op == "delete":
        del lines[i]
    elif op == "duplicate":
        lines.insert(i, line)
    elif op == "insert":
        lines.insert(i, indent + key + ": " + token)
    elif op == "indent":
        lines[i] = token[:1].replace("\n", "") + " " + line
    elif op == "dedent":
        lines[i] = line.lstrip()
    elif op == "chars":
        cut = len(token) % (len(line) + 1)
        lines[i] = line[:cut] + token + line[cut:]
    elif op == "swap":
        j = (i + len(token) + 1) % len(lines)
        lines[i], lines[j] = lines[j], lines[i]
    return lines


_OPS = ("value", "value", "value", "key", "delete", "duplicate", "insert", "indent", "dedent", "chars", "swap")
_token = st.one_of(st.sampled_from(NASTY), st.text(max_size=12))
_key = st.one_of(st.sampled_from(KEYS), st.text(max_size=8))
_edit = st.tuples(st.sampled_from(_OPS), st.integers(0, 10_000), _token, _key)


def mutated_text(base: str) -> st.SearchStrategy[str]:
    """`base` with 1-5 line edits: values, keys, deleted/duplicated/swapped lines, stray characters."""
    def apply(edits):
        lines = base.splitlines()
        for op, i, token, key in edits:
            lines = _mutate_line(lines, op, i, token, key)
        return "\n".join(lines) + "\n"
    return st.lists(_edit, min_size=1, max_size=5).map(apply)


# ----------------------------------------------------------------------------- structure mutations
scalar = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-3, 70),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=10), st.sampled_from(NASTY))
value = st.recursive(scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.one_of(st.sampled_from(KEYS), st.text(max_size=6)), inner, max_size=3), max_leaves=8)


def _paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for key, item in node.items():
            yield from _paths(item, path + (key,))
    elif isinstance(node, list):
        for i, item in enumerate(node):
            yield from _paths(item, path + (i,))


def mutated_structure(base) -> st.SearchStrategy:
    """A deep copy of `base` with 1-4 values replaced, keys deleted or unknown keys added."""
    paths = list(_paths(base))[1:]

    @st.composite
    def build(draw):
        data = copy.deepcopy(base)
        for _ in range(draw(st.integers(1, 4))):
            path = draw(st.sampled_from(paths))
            parent = data
            try:
                for step in path[:-1]:
                    parent = parent[step]
                op = draw(st.sampled_from(("set", "set", "set", "delete", "add")))
                if op == "set":
                    parent[path[-1]] = draw(value)
                elif op == "delete":
                    del parent[path[-1]]
                elif isinstance(parent, dict):
                    parent[draw(_key)] = draw(value)
            except (KeyError, IndexError, TypeError):  # an earlier edit removed or replaced the way there
                continue
        return data
    return build()


def dumped(data) -> str:
    """YAML text of a structure (yaml.dump: keys of any type, NaN and infinities included)."""
    return yaml.dump(data, sort_keys=False, allow_unicode=True)


def plan_texts() -> st.SearchStrategy[str]:
    return st.one_of(mutated_text(RICH_PLAN), mutated_structure(RICH_PLAN_DATA).map(dumped),
                     st.text(max_size=200))


def _trimmed(node):
    """The shipped calibrated profile cut to two entries per list and without its prose: every section
    and kind of value is still there, and a mutation lands on something that matters more often."""
    if isinstance(node, dict):
        return {k: _trimmed(v) for k, v in node.items() if k not in ("method", "extrapolation", "fit", "source")
                or k == "source" and isinstance(v, str)}
    if isinstance(node, list):
        return [_trimmed(v) for v in node[:2]]
    return node


def profile_texts() -> st.SearchStrategy[str]:
    base = _trimmed(yaml.safe_load((DATA / "calibrated-cpu-2x2.yaml").read_text()))
    return st.one_of(mutated_text(dumped(base)), mutated_structure(base).map(dumped))


def published_texts() -> st.SearchStrategy[str]:
    cases = yaml.safe_load((DATA / "published-dev.yaml").read_text())[:2]
    base = dumped(cases)
    return st.one_of(mutated_text(base), mutated_structure(cases).map(dumped), st.text(max_size=200))


HISTORY_RECORD = {
    "id": "20260101T000000Z-abc123", "timestamp": "2026-01-01T00:00:00Z", "git_revision": "abc123",
    "fingerprint": {"host": "h", "device_name": "cpu", "driver_version": None, "cuda_version": None,
                    "torch_version": "2.13.0", "threads": 2},
    "settings": {"device": "cpu", "quick": True},
    "benchmarks": {"matmul.fp32.64x64x64": {"unit": "flop_per_s", "higher_is_better": True,
                                            "samples": [1.0e9, 1.1e9, 0.9e9], "median": 1.0e9, "iqr": 0.1e9},
                   "bandwidth.copy.4096": {"unit": "bytes_per_s", "higher_is_better": True,
                                           "samples": [2.0e9, 2.1e9], "median": 2.05e9, "iqr": 0.05e9}}}


def _json_line(data) -> str:
    try:
        return json.dumps(data)
    except (TypeError, ValueError):
        return "{"


def history_texts() -> st.SearchStrategy[str]:
    """JSONL files: whole records, mutated records, raw mutated JSON text and random lines."""
    good = json.dumps(HISTORY_RECORD)
    line = st.one_of(st.just(good), mutated_structure(HISTORY_RECORD).map(_json_line),
                     mutated_text(json.dumps(HISTORY_RECORD, indent=1)).map(lambda t: t.replace("\n", " ")),
                     st.text(max_size=60), st.sampled_from(["[" * 5000, '{"id": 1e99999}', '{"a": ' + "9" * 5000 + "}",
                                                            "NaN", "\x00", "{}", "[]", "null"]))
    return st.lists(line, min_size=1, max_size=4).map(lambda lines: "\n".join(lines) + st_newline(lines))


def st_newline(lines) -> str:
    return "\n" if len(lines) % 2 else ""   # every other file ends without a newline (a cut-short last line)


SET_KEYS = [f"{section}.{key}" for section, keys in RICH_PLAN_DATA.items() for key in keys] + [
    "model.preset", "data.samples", "training.grad_accum_steps", "parallelism.data_parallel", "hardware.system",
    "model", "model.", ".x", "a.b.c", "trainin.micro_batch_size", "model.n_layer", ""]


def set_values() -> st.SearchStrategy[list[str]]:
    one = st.one_of(st.tuples(st.sampled_from(SET_KEYS), st.sampled_from(["=", "==", "", " = "]), _token)
                    .map(lambda t: "".join(t)), st.text(max_size=30))
    return st.lists(one, min_size=1, max_size=3)


# ----------------------------------------------------------------------------- the check
def assert_one_line_per_error(exc: SimkitError) -> None:
    """What the CLI prints for `exc`: one non-empty line per error, each naming where it is."""
    assert exc.errors, exc
    for line in exc.lines():
        assert line.strip() and "\n" not in line and "Traceback" not in line, repr(line)
    assert len(exc.lines()) <= 21


def assert_finite_prediction(pred) -> None:
    numbers = [pred.step_time_s, pred.samples_per_s, pred.tokens_per_s, pred.mfu, pred.memory_per_device_bytes,
               *pred.step_time_interval_s, *pred.breakdown_s.values(), *pred.memory_breakdown_bytes.values()]
    assert all(math.isfinite(x) for x in numbers), numbers
    assert pred.step_time_s > 0 and pred.memory_per_device_bytes > 0
