"""Ctrl-C and SIGTERM in the long-running commands (calibrate, validate, sweep).

`interruptible(message)` turns SIGTERM into the same exception as Ctrl-C (`Interrupted`, a
KeyboardInterrupt, so every `finally` and `except BaseException` on the way out runs: worker process
groups are stopped, temporary files removed) and ends the command with one line, `interrupted:
<message>`, and the shell's exit status for the signal: 130 for SIGINT, 143 for SIGTERM.
"""
from __future__ import annotations

import contextlib
import signal
import sys
from typing import Callable, Iterator

import click


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived; `signum` says which."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise(signum, frame):
    raise Interrupted(signum)


def exit_status(exc: BaseException) -> int:
    """128 + the signal number, as a shell reports a process ended by it."""
    return 128 + int(getattr(exc, "signum", signal.SIGINT))


@contextlib.contextmanager
def interruptible(message: str | Callable[[], str]) -> Iterator[None]:
    """Run a block that SIGINT/SIGTERM may interrupt; then print `interrupted: <message>` and exit
    130/143. `message` may be a function, called at that moment (to say how far the work got)."""
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, _raise)
        except ValueError:  # not the main thread: leave the handlers alone
            pass
    try:
        yield
    except KeyboardInterrupt as exc:
        text = message() if callable(message) else message
        click.echo(f"interrupted: {text}", err=True)
        sys.exit(exit_status(exc))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
