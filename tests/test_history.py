"""The history store: where it lives, append-only JSONL, concurrent and crashed writers, lookup."""
import json
import multiprocessing
import re

import pytest

from simkit.track import history
from simkit.core.errors import SimkitError

FP = {"host": "box", "device_name": "cpu", "driver_version": None, "cuda_version": None,
      "torch_version": "2.13.0", "threads": 2}


def _record(value=100.0, n=5, fingerprint=FP, **extra):
    return {"git_revision": "abc123", "fingerprint": dict(fingerprint), "settings": {"device": "cpu"},
            "benchmarks": {"matmul.fp32.64x64x64": history.benchmark_entry(
                [value + i for i in range(n)], "flop_per_s", True)}, **extra}


# ------------------------------------------------------------------------------ where it lives
def test_default_path_follows_env_then_xdg_then_home(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SIMKIT_HISTORY", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert history.default_path() == tmp_path / ".local/share/simkit/history.jsonl"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert history.default_path() == tmp_path / "xdg/simkit/history.jsonl"
    monkeypatch.setenv("SIMKIT_HISTORY", str(tmp_path / "h.jsonl"))
    assert history.default_path() == tmp_path / "h.jsonl"
    assert history.resolve_path(tmp_path / "x.jsonl") == tmp_path / "x.jsonl"


def test_append_uses_the_default_store_and_creates_its_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("SIMKIT_HISTORY", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    history.append_record(_record())
    assert (tmp_path / "data/simkit/history.jsonl").exists()


# ------------------------------------------------------------------------------ writing, reading
def test_append_fills_id_timestamp_and_summary(tmp_path):
    path = tmp_path / "h.jsonl"
    record = _record()
    del record["benchmarks"]["matmul.fp32.64x64x64"]["median"]
    record_id = history.append_record(record, path)
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", record_id)
    records, warnings = history.load_records(path)
    assert warnings == []
    (saved,) = records
    assert saved["id"] == record_id and saved["git_revision"] == "abc123"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", saved["timestamp"])
    assert saved["benchmarks"]["matmul.fp32.64x64x64"]["median"] == 102.0
    assert list(saved)[:4] == ["id", "timestamp", "git_revision", "fingerprint"]
    assert path.read_text().count("\n") == 1


def test_append_keeps_given_id_and_timestamp(tmp_path):
    rid = history.append_record(_record(id="r1", timestamp="2026-01-01T00:00:00Z"), tmp_path / "h")
    assert rid == "r1"
    assert history.load_records(tmp_path / "h")[0][0]["timestamp"] == "2026-01-01T00:00:00Z"


def test_git_revision_is_looked_up_when_missing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not a git checkout
    record = _record()
    del record["git_revision"]
    history.append_record(record, tmp_path / "h")
    assert history.load_records(tmp_path / "h")[0][0]["git_revision"] is None


@pytest.mark.parametrize("samples, problem", [
    ([], "has no samples list"),
    ([1.0, float("nan")], "not a finite number"),
    (["1"], "not a finite number"),
])
def test_append_refuses_bad_samples(tmp_path, samples, problem):
    record = {"benchmarks": {"x": {"samples": samples}}}
    with pytest.raises(SimkitError, match=problem):
        history.append_record(record, tmp_path / "h")
    assert not (tmp_path / "h").exists()


def test_missing_file_is_an_empty_history(tmp_path):
    assert history.load_records(tmp_path / "none.jsonl") == ([], [])


def _append_many(path, writer, count):
    for i in range(count):
        history.append_record(_record(writer=writer, i=i), path)


def test_concurrent_writers_leave_whole_records(tmp_path):
    path = tmp_path / "h.jsonl"
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_append_many, args=(path, w, 50)) for w in range(8)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=120)
        assert p.exitcode == 0
    records, warnings = history.load_records(path)
    assert warnings == []
    assert len(records) == 400
    assert sorted((r["writer"], r["i"]) for r in records) == [(w, i) for w in range(8) for i in range(50)]
    assert len(path.read_bytes().splitlines()) == 400


def test_truncated_last_line_is_skipped_with_a_warning(tmp_path):
    path = tmp_path / "h.jsonl"
    history.append_record(_record(), path)
    whole = (json.dumps(_record(id="cut")) + "\n").encode()
    with open(path, "ab") as fh:
        fh.write(whole[: len(whole) // 2])  # a writer died mid-record
    records, warnings = history.load_records(path)
    assert len(records) == 1
    assert warnings == [f"{path}:2: skipped: not valid JSON (cut short: the last line has no newline; "
                        "an interrupted write?)"]
    # the next append starts on a line of its own and is read back whole
    history.append_record(_record(id="after"), path)
    records, warnings = history.load_records(path)
    assert [r["id"] for r in records][-1] == "after"
    assert len(warnings) == 1 and ":2: skipped: not valid JSON" in warnings[0]


def test_corrupt_middle_lines_are_reported_and_skipped(tmp_path):
    path = tmp_path / "h.jsonl"
    history.append_record(_record(id="a"), path)
    with open(path, "a") as fh:
        fh.write("{not json\n")
        fh.write('{"id": "b", "benchmarks": {"x": {"samples": []}}}\n')
        fh.write("\n")
    history.append_record(_record(id="c"), path)
    records, warnings = history.load_records(path)
    assert [r["id"] for r in records] == ["a", "c"]
    assert warnings == [f"{path}:2: skipped: not valid JSON",
                        f"{path}:3: skipped: benchmark 'x' has no samples list"]


# ------------------------------------------------------------------------------ lookup, baseline
@pytest.fixture
def five():
    return [_record(id=f"2026010{i}T000000Z-{c}", timestamp=f"2026-01-0{i}T00:00:00Z")
            for i, c in zip(range(1, 6), ["aa1111", "bb2222", "bb3333", "cc4444", "dd5555"])]


def test_find_record_by_last_prefix_and_id(five):
    assert history.find_record(five, "last")["id"].endswith("dd5555")
    assert history.find_record(five, "last~1")["id"].endswith("cc4444")
    assert history.find_record(five, "last~4")["id"].endswith("aa1111")
    assert history.find_record(five, "20260102")["id"].endswith("bb2222")


@pytest.mark.parametrize("ref, message", [
    ("last~5", "the history has only 5 record(s)"),
    ("last~x", "bad record reference 'last~x'; write last, last~1"),
    ("2026010", "ambiguous: matches 20260101T000000Z-aa1111, "),
    ("zzz", "no record 'zzz'; known: 20260105T000000Z-dd5555, 20260104T000000Z-cc4444"),
])
def test_find_record_errors_say_what_exists(five, ref, message):
    with pytest.raises(SimkitError) as err:
        history.find_record(five, ref)
    assert message in str(err.value)


def test_find_record_in_empty_history():
    with pytest.raises(SimkitError, match="the history is empty"):
        history.find_record([], "last")


def test_baseline_uses_only_the_same_fingerprint():
    other = dict(FP, threads=4)
    records = [_record(id="a"), _record(id="b", fingerprint=other), _record(id="c"), _record(id="d")]
    assert [r["id"] for r in history.baseline_records(records, records[-1], 1)] == ["c"]
    assert [r["id"] for r in history.baseline_records(records, records[-1], 5)] == ["a", "c"]
    assert history.baseline_records(records, records[1], 3) == []
    assert history.fingerprint_differences(FP, other) == ["threads: 2 vs 4"]


def test_pooled_benchmarks_put_samples_together():
    pooled = history.pooled_benchmarks([_record(100.0, n=2), _record(200.0, n=3)])
    assert pooled["matmul.fp32.64x64x64"]["samples"] == [100.0, 101.0, 200.0, 201.0, 202.0]
    assert pooled["matmul.fp32.64x64x64"]["higher_is_better"] is True


def test_fingerprint_of_keeps_only_the_comparable_keys():
    env = dict(FP, cpu_model="x", tf32_enabled=False)
    assert history.fingerprint_of(env) == FP


@pytest.mark.parametrize("unit, value, label", [
    ("flop_per_s", 2.1e11, "GFLOP/s"), ("flop_per_s", 3e14, "TFLOP/s"), ("bytes_per_s", 1.2e10, "GB/s"),
    ("s", 0.012, "ms"), ("s", 3e-6, "us"), ("widgets", 5.0, "widgets"),
])
def test_display_scale(unit, value, label):
    assert history.display_scale(unit, value)[1] == label


def test_importing_history_is_cheap():
    import subprocess
    import sys

    code = ("import sys, simkit.track.history, simkit.track.regression, simkit.cli.history; "
            "print(any(m in sys.modules for m in ('scipy', 'matplotlib', 'numpy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
