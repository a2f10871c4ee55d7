"""Faults survived, with real processes: signals, outputs that cannot be written, workers that crash
or hang, concurrent writers.

- SIGINT and SIGTERM during `calibrate` (one process, and with --comm workers), `validate` (one and
  two processes) and `sweep`: one line `interrupted: ...`, exit 130 / 143, the earlier output
  untouched, no temporary file left, no worker left in the process table.
- Output into a read-only folder, a missing folder and onto a full disk (`ulimit -f` via
  RLIMIT_FSIZE): one `error:` line before any measuring starts; nothing half-written when the disk
  fills during the final write.
- A torchrun worker that crashes (SIGKILL) or hangs during `calibrate --comm` or a 2-process
  `validate`: the error names the rank and what it was doing, within the configured timeout.
- Concurrent `validate --record` writers: every record whole, none lost.

Each test takes seconds; the ones that start torch workers are marked slow (CI's second step).
`simkit optimize` does not exist yet, so its interrupt test is not written.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "tests" / "data" / "calibrated-cpu-2x2.yaml"

TINY_CALIBRATION = """
import simkit.measure.calibrate as cal
from simkit.measure.attention import AttentionShape

def tiny_plan(settings, cache_bytes, memory_bytes):
    return cal.Plan(gemm_sizes=(16, 16), dtypes=("fp32",), bandwidth_sizes=(64 * 1024,),
                    attention_shapes=(AttentionShape(batch=1, heads=1, seq_len=16, head_dim=16, dtype="fp32"),),
                    comm_sizes=(4096, 65536),
                    seconds={"matmul": 0.05, "bandwidth": 0.05, "attention": 0.05, "collectives": %s},
                    min_samples=3, max_samples=%d, max_warmup_s=0.0, min_sample_s=1e-4)
cal.default_plan = tiny_plan
"""

# A plan small enough to train thousands of steps a second on one or two CPU processes.
TINY_PLAN = f"""\
model: {{n_layers: 1, d_model: 32, n_heads: 2, vocab_size: 64, seq_len: 16}}
training: {{global_batch_size: 4, micro_batch_size: 2, precision: fp32}}
parallelism: {{data_parallel: %d}}
hardware: {{device: {PROFILE}, devices_per_node: %d}}
"""


# ----------------------------------------------------------------------------- helpers
def _script(tmp_path: Path, body: str, args: list[str]) -> Path:
    """A Python script that applies `body` (patches) and then runs `simkit ARGS`."""
    script = tmp_path / "run_simkit.py"
    script.write_text(textwrap.dedent(body) + textwrap.dedent(f"""
        import sys
        sys.argv = ["simkit"] + {args!r}
        from simkit.cli import main
        main()
    """))
    return script


def _start(script: Path, scratch: Path, **kwargs) -> subprocess.Popen:
    """Run `script` with its temporary files (and so its workers' command lines) under `scratch`."""
    scratch.mkdir(exist_ok=True)
    env = dict(os.environ, TMPDIR=str(scratch), PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
    return subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, **kwargs)


def _processes_mentioning(marker: str) -> list[int]:
    """PIDs whose command line contains `marker` (from /proc: psutil may not be installed)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _wait_for(condition, process: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the process ended early: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"timed out: {process.communicate()}")
        time.sleep(0.1)


def _logs_say(scratch: Path, pattern: str, text: str, count: int = 1):
    return lambda: sum(text in log.read_text(errors="replace") for log in scratch.glob(pattern)) >= count


def _interrupt(process: subprocess.Popen, sig: int) -> tuple[str, str]:
    process.send_signal(sig)
    return process.communicate(timeout=90)


SIGNALS = [pytest.param(signal.SIGINT, 130, id="SIGINT"), pytest.param(signal.SIGTERM, 143, id="SIGTERM")]
needs_proc = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads the process table in /proc")


# ----------------------------------------------------------------------------- signals
@pytest.mark.parametrize("sig, code", SIGNALS)
def test_signal_during_calibrate_keeps_the_earlier_profile(tmp_path, sig, code):
    out, started = tmp_path / "cal.yaml", tmp_path / "started"
    out.write_text("earlier profile\n")
    script = _script(tmp_path, TINY_CALIBRATION % ("0", 3) + textwrap.dedent(f"""
        import pathlib, time
        from simkit.measure import attention
        def slow(*args, **kwargs):
            pathlib.Path({str(started)!r}).touch()
            time.sleep(60)
        attention.sweep = slow
    """), ["calibrate", "--device", "cpu", "--threads", "1", "--no-history", "--output", str(out)])
    process = _start(script, tmp_path / "scratch")
    _wait_for(started.exists, process)
    _, stderr = _interrupt(process, sig)
    assert process.returncode == code, stderr
    assert stderr.splitlines()[-1] == f"interrupted: {out} was not written (an earlier file there is untouched)"
    assert out.read_text() == "earlier profile\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cal.yaml", "run_simkit.py", "scratch", "started"]


@pytest.mark.slow
@needs_proc
@pytest.mark.parametrize("sig, code", SIGNALS)
def test_signal_during_calibrate_comm_stops_every_worker(tmp_path, sig, code):
    out, scratch = tmp_path / "cal.yaml", tmp_path / "scratch"
    script = _script(tmp_path, TINY_CALIBRATION % ("60", 100000), [
        "calibrate", "--device", "cpu", "--threads", "2", "--comm", "--nproc", "2", "--no-history", "--output", str(out)])
    process = _start(script, scratch)
    _wait_for(_logs_say(scratch, "simkit-comm-*/workers.log", "measuring all_reduce"), process)
    assert len(_processes_mentioning(str(scratch))) >= 3  # torchrun and its two workers
    _, stderr = _interrupt(process, sig)
    assert process.returncode == code, stderr
    assert stderr.splitlines()[-1] == f"interrupted: {out} was not written (an earlier file there is untouched)"
    assert not out.exists()
    assert _processes_mentioning(str(scratch)) == []
    assert list(scratch.glob("simkit-*")) == []  # simkit's temporary folder for the workers is gone too


@pytest.mark.parametrize("sig, code", SIGNALS)
def test_signal_during_single_process_validate(tmp_path, sig, code):
    plan, record, started = tmp_path / "plan.yml", tmp_path / "runs.jsonl", tmp_path / "started"
    plan.write_text(TINY_PLAN % (1, 1))
    script = _script(tmp_path, f"""
        import pathlib
        from simkit.measure import training
        step = training.Trainer.step
        def touching(self, *args, **kwargs):
            pathlib.Path({str(started)!r}).touch()
            return step(self, *args, **kwargs)
        training.Trainer.step = touching
    """, ["validate", str(plan), "--steps", "1000000", "--warmup", "0", "--record", str(record)])
    process = _start(script, tmp_path / "scratch")
    _wait_for(started.exists, process)
    _, stderr = _interrupt(process, sig)
    assert process.returncode == code, stderr
    assert stderr.splitlines() == ["interrupted: 0 of 1 plan measured; nothing else was written"]
    assert not record.exists()


@pytest.mark.slow
@needs_proc
@pytest.mark.parametrize("sig, code", SIGNALS)
def test_signal_during_two_process_validate_stops_every_worker(tmp_path, sig, code):
    plan, record, scratch = tmp_path / "plan.yml", tmp_path / "runs.jsonl", tmp_path / "scratch"
    plan.write_text(TINY_PLAN % (2, 2))
    record.write_text('{"earlier": "record"}\n')
    script = _script(tmp_path, "", ["validate", str(plan), "--steps", "1000000", "--warmup", "0",
                                    "--record", str(record)])
    process = _start(script, scratch)
    _wait_for(_logs_say(scratch, "simkit-validate-*/workers.log", "timed step", 1), process)
    assert len(_processes_mentioning(str(scratch))) >= 3
    _, stderr = _interrupt(process, sig)
    assert process.returncode == code, stderr
    assert stderr.splitlines() == ["interrupted: 0 of 1 plan measured; nothing else was written"]
    assert record.read_text() == '{"earlier": "record"}\n'
    assert _processes_mentioning(str(scratch)) == []
    assert list(scratch.glob("simkit-*")) == []


LONG_COMMANDS = [   # (the function patched to hang, the command, its output file)
    pytest.param("sweep.evaluate", ["sweep", "{plan}", "--vary", "training.micro_batch_size=1,2", "--output", "{out}"],
                 id="sweep"),
    pytest.param("optimize._search", ["optimize", "{plan}", "--devices", "1", "--output", "{out}"], id="optimize")]


@pytest.mark.parametrize("sig, code", SIGNALS)
@pytest.mark.parametrize("patched, command", LONG_COMMANDS)
def test_signal_during_a_search_writes_no_output(tmp_path, sig, code, patched, command):
    plan, out, started = tmp_path / "plan.yml", tmp_path / "result.csv", tmp_path / "started"
    plan.write_text(TINY_PLAN % (1, 1))
    out.write_text("earlier,csv\n")
    module, function = patched.split(".")
    script = _script(tmp_path, f"""
        import pathlib, time
        from simkit.search import {module}
        def slow(*args, **kwargs):
            pathlib.Path({str(started)!r}).touch()
            time.sleep(60)
        {module}.{function} = slow
    """, [arg.format(plan=plan, out=out) for arg in command])
    process = _start(script, tmp_path / "scratch")
    _wait_for(started.exists, process)
    _, stderr = _interrupt(process, sig)
    assert process.returncode == code, stderr
    assert stderr.splitlines() == [f"interrupted: {out} was not written (an earlier file there is untouched)"]
    assert out.read_text() == "earlier,csv\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.yml", "result.csv", "run_simkit.py", "scratch",
                                                          "started"]


# ----------------------------------------------------------------------------- outputs that cannot be written
def _read_only_folder(tmp_path: Path) -> Path:
    """A folder this process cannot create files in: a chmod 555 one, or as root (whom modes do not
    stop) sysfs, where nobody can create files."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    if not Path("/sys").is_dir() or os.access("/sys/simkit-probe", os.F_OK):
        pytest.skip("no folder that root cannot write to")
    return Path("/sys")


def _simkit(args: list[str], fsize: int | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    def limit():
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
    return subprocess.run([sys.executable, "-m", "simkit", *args], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limit)


OUTPUT_FAULTS = ["read-only folder", "missing folder", "full disk"]


def _fault(tmp_path: Path, fault: str, name: str) -> tuple[Path, int | None, str]:
    """(output path, file-size limit, the expected error's reason)."""
    if fault == "read-only folder":
        return _read_only_folder(tmp_path) / name, None, "the folder is not writable"
    if fault == "missing folder":
        return tmp_path / "no-such-folder" / name, None, f"the folder {str(tmp_path / 'no-such-folder')!r} does not exist"
    return tmp_path / name, 16 * 1024, "file too large (a file-size limit such as `ulimit -f`?)"


@pytest.mark.parametrize("fault", OUTPUT_FAULTS)
def test_calibrate_refuses_an_unwritable_output_before_measuring(tmp_path, fault):
    out, fsize, reason = _fault(tmp_path, fault, "cal.yaml")
    began = time.monotonic()
    result = _simkit(["calibrate", "--device", "cpu", "--quick", "--no-history", "--output", str(out)], fsize)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"error: {out}: --output: cannot write: {reason}"]
    assert time.monotonic() - began < 30  # no measuring happened (a quick calibration takes ~40 s)
    assert not out.exists()
    assert not any(p.name.endswith(".tmp") for p in tmp_path.rglob("*"))


UNWRITABLE = [   # (command, the option named in the error, the output's file name)
    pytest.param(["validate", "{plan}", "--steps", "1", "--record", "{out}"], "--record", "runs.jsonl", id="validate"),
    pytest.param(["sweep", "{plan}", "--vary", "training.micro_batch_size=1,2", "-o", "{out}"], "--output", "sweep.csv",
                 id="sweep"),
    pytest.param(["optimize", "{plan}", "--devices", "1", "-o", "{out}"], "--output", "best.csv", id="optimize")]


@pytest.mark.parametrize("fault", OUTPUT_FAULTS)
@pytest.mark.parametrize("command, option, name", UNWRITABLE)
def test_an_unwritable_output_is_refused_before_the_work(tmp_path, fault, command, option, name):
    plan = tmp_path / "plan.yml"
    plan.write_text(TINY_PLAN % (1, 1))
    out, fsize, reason = _fault(tmp_path, fault, name)
    result = _simkit([arg.format(plan=plan, out=out) for arg in command], fsize)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"error: {out}: {option}: cannot write: {reason}"]
    assert not out.exists()


def test_disk_filling_during_the_final_write_leaves_the_earlier_file(tmp_path):
    """The probe fits under the limit, the CSV does not: the old file stays, no temporary file is left."""
    plan, out = tmp_path / "plan.yml", tmp_path / "sweep.csv"
    plan.write_text(TINY_PLAN % (1, 1))
    out.write_text("earlier,csv\n")
    values = ",".join(str(v) for v in range(1, 41))
    result = _simkit(["sweep", str(plan), "--vary", f"training.micro_batch_size={values}", "--vary",
                      f"model.n_layers={values}", "-o", str(out)], fsize=96 * 1024)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"error: {out}: cannot write: file too large (a file-size limit such as `ulimit -f`?); nothing was written"]
    assert out.read_text() == "earlier,csv\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.yml", "sweep.csv"]


def test_history_append_on_a_full_disk_adds_no_partial_line(tmp_path):
    code = textwrap.dedent(f"""
        import resource
        from simkit.track import history
        from simkit.core.errors import SimkitError
        path = {str(tmp_path / 'h.jsonl')!r}
        record = {{"benchmarks": {{"x": {{"samples": [1.0] * 2000}}}}, "git_revision": None}}
        history.append_record(record, path)
        size = __import__("os").path.getsize(path)
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 100, size + 100))
        try:
            history.append_record(record, path)
        except SimkitError as exc:
            print(exc)
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip().endswith("cannot write history: file too large (a file-size limit such as "
                                          "`ulimit -f`?); nothing was appended"), result
    from simkit.track import history

    records, warnings = history.load_records(tmp_path / "h.jsonl")
    assert len(records) == 1 and warnings == []


def test_profiles_are_written_with_the_umask(tmp_path):
    """A colleague on the same machine can read a calibrated profile (it was 0600 before)."""
    from simkit.core.files import write_atomic

    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "cal.yaml", "name: x\n")
        assert (tmp_path / "cal.yaml").stat().st_mode & 0o777 == 0o644
        os.umask(0o077)
        write_atomic(tmp_path / "private.yaml", "name: x\n")
        assert (tmp_path / "private.yaml").stat().st_mode & 0o777 == 0o600
        (tmp_path / "cal.yaml").chmod(0o640)  # replacing a file keeps its mode
        write_atomic(tmp_path / "cal.yaml", "name: y\n")
        assert (tmp_path / "cal.yaml").stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(old)


# ----------------------------------------------------------------------------- workers that crash or hang
FAULTY_COMM_WORKER = """
import os, signal, time
import simkit.measure.comm_worker as cw
if int(os.environ.get("RANK", "0")) == 1:
    def broken(*args, **kwargs):
        if os.environ["SIMKIT_TEST_FAULT"] == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(3600)
    cw.measure = broken
cw.main()
"""

FAULTY_TRAINING_WORKER = """
import os, signal, time
from simkit.measure import training
if int(os.environ.get("RANK", "0")) == 1:
    step, calls = training.Trainer.step, [0]
    def broken(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            if os.environ["SIMKIT_TEST_FAULT"] == "crash":
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(3600)
        return step(self, *args, **kwargs)
    training.Trainer.step = broken
training.main()
"""


def _faulty_run(tmp_path: Path, fault: str, module: str, patch_target: str, worker: str, args: list[str]):
    faulty = tmp_path / "faulty_worker.py"
    faulty.write_text(worker)
    script = _script(tmp_path, TINY_CALIBRATION % ("60", 100000) + textwrap.dedent(f"""
        import os
        os.environ["SIMKIT_TEST_FAULT"] = {fault!r}
        import {patch_target.rsplit('.', 1)[0]} as target
        real = target.{patch_target.rsplit('.', 1)[1]}
        def swapped(*args, **kwargs):
            command = real(*args, **kwargs)
            i = command.index({module!r})
            return command[:i - 1] + [{str(faulty)!r}] + command[i + 1:]
        target.{patch_target.rsplit('.', 1)[1]} = swapped
    """), args)
    began = time.monotonic()
    process = _start(script, tmp_path / "scratch")
    stdout, stderr = process.communicate(timeout=240)
    return process.returncode, stderr, time.monotonic() - began


@pytest.mark.slow
@needs_proc
@pytest.mark.parametrize("fault", ["crash", "hang"])
def test_calibrate_comm_names_the_rank_that_crashed_or_hung(tmp_path, fault):
    out = tmp_path / "cal.yaml"
    code, stderr, took = _faulty_run(tmp_path, fault, "simkit.measure.comm_worker",
                                     "simkit.measure.collectives.worker_command", FAULTY_COMM_WORKER,
                                     ["calibrate", "--device", "cpu", "--threads", "2", "--comm", "--nproc", "2",
                                      "--comm-timeout", "10", "--no-history", "--output", str(out)])
    assert code == 2, stderr
    line = stderr.splitlines()[-1]
    if fault == "crash":
        assert line.startswith("error: --comm: the collective benchmark: rank 1 stopped with signal 9 (SIGKILL) "
                               "while measuring all_reduce of "), line
    else:  # rank 0 gives up waiting after --comm-timeout; the message says where rank 1 was
        assert line.startswith("error: --comm: the collective benchmark: rank 0 failed while measuring all_reduce"), line
        assert "the other ranks were last seen rank 1: measuring all_reduce of" in line, line
    assert took < 120
    assert not out.exists()
    assert _processes_mentioning(str(tmp_path / "scratch")) == []


@pytest.mark.slow
@needs_proc
@pytest.mark.parametrize("fault", ["crash", "hang"])
def test_two_process_validate_names_the_rank_that_crashed_or_hung(tmp_path, fault):
    plan = tmp_path / "plan.yml"
    plan.write_text(TINY_PLAN % (2, 2))
    code, stderr, took = _faulty_run(tmp_path, fault, "simkit.measure.training",
                                     "simkit.validate.live.training_command", FAULTY_TRAINING_WORKER,
                                     ["validate", str(plan), "--steps", "20", "--warmup", "2", "--timeout", "20"])
    assert code == 2, stderr
    line = stderr.splitlines()[-1]
    if fault == "crash":
        assert line == ("error: the 2-process training run: rank 1 stopped with signal 9 (SIGKILL) while timed "
                        "step 1 of 20"), line
    else:
        assert "the 2-process training run" in line and "rank 1: timed step 1 of 20" in line, line
    assert took < 120
    assert _processes_mentioning(str(tmp_path / "scratch")) == []


# ----------------------------------------------------------------------------- concurrent writers
def _append_many(path: str, writer: int, count: int) -> None:
    from simkit.core.files import append_line

    for i in range(count):  # lines far longer than a pipe buffer: one write each, under the lock
        line = json.dumps({"writer": writer, "i": i, "pad": "x" * 70_000}) + "\n"
        append_line(path, line.encode(), what="--record file")


def test_concurrent_record_appends_lose_and_interleave_nothing(tmp_path):
    path = str(tmp_path / "runs.jsonl")
    workers = [multiprocessing.Process(target=_append_many, args=(path, w, 25)) for w in range(6)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(timeout=120)
        assert p.exitcode == 0
    lines = Path(path).read_text().splitlines()
    assert sorted((r["writer"], r["i"]) for r in map(json.loads, lines)) == [(w, i) for w in range(6) for i in range(25)]


@pytest.mark.slow
def test_concurrent_validate_record_writers(tmp_path):
    plan, record = tmp_path / "plan.yml", tmp_path / "runs.jsonl"
    plan.write_text(TINY_PLAN % (1, 1))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    runs = [subprocess.Popen([sys.executable, "-m", "simkit", "validate", str(plan), "--steps", "3", "--warmup", "1",
                              "--threads", "1", "--record", str(record)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True, env=env) for _ in range(4)]
    for run in runs:
        _, stderr = run.communicate(timeout=300)
        assert run.returncode == 0, stderr
    lines = record.read_text().splitlines()
    assert len(lines) == 4
    assert all(json.loads(line)["plan_file"] == str(plan) for line in lines)
