"""Progress of long work on stderr: a tqdm bar saying what is being done, how far it is and the time left,
drawn only when stderr is an interactive terminal (never into pipes, logs or captured output)."""
from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator

SWEEP_BAR_DELAY_S = 0.5   # sweeps shorter than this never show a bar
FORMAT = "{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed} elapsed, ~{remaining} left]{postfix}"


def stderr_is_terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:   # a closed stream
        return False


@contextlib.contextmanager
def bar(total: int, unit: str, desc: str = "", delay_s: float = 0.0) -> Iterator[object | None]:
    """A tqdm bar on stderr, or None when stderr is not a terminal. `delay_s`: show it only once the work
    has taken that long (quick runs never flash a bar)."""
    if not stderr_is_terminal():
        yield None
        return
    from tqdm import tqdm

    progress = tqdm(total=total, unit=unit, desc=desc, file=sys.stderr, dynamic_ncols=True, delay=delay_s,
                    bar_format=FORMAT, leave=False)
    try:
        yield progress
    finally:
        progress.close()


def echo(progress, text: str) -> None:
    """A line on stderr above the bar (or plain, without one)."""
    if progress is None:
        import click

        click.echo(text, err=True)
    else:
        progress.write(text, file=sys.stderr)


def sweep_callback(progress) -> Callable[[int, int, str], None] | None:
    """`run_sweep(progress=...)` drawing on `progress` (None when there is no bar)."""
    if progress is None:
        return None

    def update(done: int, total: int, what: str) -> None:
        progress.total = total
        progress.n = done
        progress.set_postfix_str(what if len(what) <= 60 else what[:59] + "…", refresh=False)
        progress.refresh()

    return update
