"""Running torchrun launches of simkit's workers and saying what went wrong in one sentence.

A launch runs in its own session (process group), so stopping it -- on a time limit, Ctrl-C or
SIGTERM -- stops torchrun and every worker with it; no worker outlives simkit. Workers print what
they are doing (`<tag>: rank R: <doing>`) and, when they fail, one `<tag> error: rank R failed while
<doing>: ...` line; with torchrun's own summary ("Root Cause ... rank: R ... exitcode: X") that
names the rank that failed or hung and what it was doing. This module does not import torch.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable


def start(command: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """Start `command` in a new session with stdout and stderr going to `log`."""
    with open(log, "w", encoding="utf-8") as log_file:
        return subprocess.Popen(command, env=env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the launch's whole process group, SIGKILL after 10 s; waits until it is gone."""
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # torchrun may have exited first and left workers behind in its group
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def wait(process: subprocess.Popen, limit_s: float, on_wait: Callable[[], None] = lambda: None) -> bool:
    """Wait for the launch to end: True when it did, False when `limit_s` passed (it is stopped then).
    Any exception on the way (Ctrl-C, SIGTERM) stops the launch and propagates."""
    began = time.monotonic()
    try:
        while process.poll() is None:
            if time.monotonic() - began > limit_s:
                stop(process)
                return False
            on_wait()
            time.sleep(0.2)
    except BaseException:
        mask = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, mask)  # a second Ctrl-C must not cut the stopping short
        try:
            stop(process)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, mask)
        raise
    stop(process)  # the launch ended: anything it left in its group goes too
    return True


def read(log: Path) -> str:
    try:
        return log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def last_doing(log: str, tag: str) -> dict[int, str]:
    """Rank -> the last thing it said it was doing (`<tag>: rank R: <doing>` lines)."""
    doing = {}
    for match in re.finditer(rf"^{re.escape(tag)}: rank (\d+): (.*)$", log, re.MULTILINE):
        doing[int(match.group(1))] = match.group(2).strip()
    return doing


def root_cause(log: str) -> tuple[int, str] | None:
    """(rank, exit) of torchrun's 'Root Cause (first observed failure)', e.g. (1, 'signal 9 (SIGKILL)')."""
    part = log.split("Root Cause", 1)
    if len(part) < 2:
        return None
    rank = re.search(r"rank\s*:\s*(\d+)", part[1])
    code = re.search(r"exitcode\s*:\s*(-?\d+)", part[1])
    if not rank:
        return None
    exit_text = "an unknown exit"
    if code:
        value = int(code.group(1))
        exit_text = f"exit code {value}"
        if value < 0:
            try:
                exit_text = f"signal {-value} ({signal.Signals(-value).name})"
            except ValueError:
                exit_text = f"signal {-value}"
    return int(rank.group(1)), exit_text


def failure(log: str, tag: str, what: str, code: int | None) -> str:
    """One sentence: which rank failed, how, and what it was doing. A rank that gave up waiting for
    the others (a timeout) is rarely the culprit, so the others' last activity is added then."""
    errors = [line.split(f"{tag} error: ", 1)[1].strip() for line in log.splitlines() if f"{tag} error: " in line]
    cause, doing = root_cause(log), last_doing(log, tag)
    rank = cause[0] if cause else None
    own = next((e for e in errors if rank is not None and e.startswith(f"rank {rank} ")), None)
    if own is None and cause is None and errors:
        own = errors[0]
        rank = int(own.split()[1]) if own.split()[1].isdigit() else None
    if own is not None:
        text = f"{what}: {own}"
    elif cause is not None:
        text = f"{what}: rank {rank} stopped with {cause[1]}" + (f" while {doing[rank]}" if rank in doing else "")
    else:
        return f"{what} failed (torchrun exit {code}): {last_error(log)}"
    if own is not None and re.search(r"timed? ?out", own, re.IGNORECASE):
        others = [f"rank {r}: {d}" for r, d in sorted(doing.items()) if r != rank][:7]
        if others:
            text += "; the other ranks were last seen " + "; ".join(others)
    return text


def hang(log: str, tag: str, what: str, limit_s: float, flag: str) -> str:
    """One sentence for a launch stopped at its time limit: what each rank was last doing."""
    doing = last_doing(log, tag)
    if not doing:
        state = "no rank had started"
    else:
        shown = [f"rank {rank}: {text}" for rank, text in sorted(doing.items())[:8]]
        state = "last seen: " + "; ".join(shown) + ("; ..." if len(doing) > 8 else "")
    return f"{what} took over {limit_s:.0f} s and was stopped ({flag}); {state}"


def last_error(log: str) -> str:
    """The most telling line of a torchrun log: the last exception line, else the last line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line or "error" in line]
    return (errors or lines or ["no output"])[-1][:300]
