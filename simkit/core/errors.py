"""The error types simkit raises for bad input; the CLI prints each error on one line and exits 2.

`SimkitError` is one problem. Loaders that can find several independent problems in one input (a
plan, a profile, a published-cases file) collect them with `Problems` and raise them together as
`SimkitErrors`, so a file with three mistakes takes one run to fix, not three.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, TypeVar

T = TypeVar("T")

MAX_SHOWN = 20
"""Errors printed for one input; the rest are counted on one more line."""


class SimkitError(Exception):
    """A problem with user input: a plan, a profile, a flag.

    ``str(err)`` reads ``FILE:LINE: KEY: message`` with the parts that are known.
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 key: str | None = None):
        message = one_line(message)
        super().__init__(message)
        self.message = message
        self.file = one_line(file) if file is not None else None
        self.line = line
        self.key = one_line(key) if key is not None else None

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        key = f"{self.key}: " if self.key else ""
        return f"{where}{key}{self.message}"

    @property
    def errors(self) -> list[SimkitError]:
        """Every problem this error stands for (itself, for a single error)."""
        return [self]

    def lines(self, limit: int = MAX_SHOWN) -> list[str]:
        """One line per problem, at most `limit` of them and then a line counting the rest."""
        shown = [str(e) for e in self.errors[:limit]]
        more = len(self.errors) - len(shown)
        return shown + ([f"... and {more} more error{'s' * (more > 1)} (fix these and run again)"] if more else [])


class SimkitErrors(SimkitError):
    """Several independent problems of one input, sorted by file and line. Its message, file, line
    and key are the first problem's, so code that shows one error still shows a true one."""

    def __init__(self, errors: list[SimkitError]):
        files = {e.file: i for i, e in reversed(list(enumerate(errors)))}  # each file where it first appears
        # problems without a line (--set values, a whole file) first, then by file and line
        ordered = sorted(errors, key=lambda e: (e.line is not None, files[e.file], e.line or 0))
        first = ordered[0]
        super().__init__(first.message, file=first.file, line=first.line, key=first.key)
        self._errors = ordered

    @property
    def errors(self) -> list[SimkitError]:
        return list(self._errors)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self._errors)


class Problems:
    """Collects the independent problems of one input, to report them all at once.

    `add` keeps the first problem per (file, key): a second one on the same key is usually a
    consequence of the first (and is found on the next run once the first is fixed)."""

    def __init__(self) -> None:
        self._errors: list[SimkitError] = []

    def __len__(self) -> int:
        return len(self._errors)

    def add(self, error: SimkitError) -> None:
        for one in error.errors:
            if one.key is not None and any(e.key == one.key and e.file == one.file for e in self._errors):
                continue
            if any(str(e) == str(one) for e in self._errors):
                continue
            self._errors.append(one)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Run a block; a SimkitError it raises is recorded instead of propagated."""
        try:
            yield
        except SimkitError as exc:
            self.add(exc)

    def call(self, fn: Callable[..., T], *args, default: T | None = None, **kwargs) -> T | None:
        """fn(*args, **kwargs), or `default` after recording the SimkitError it raised."""
        try:
            return fn(*args, **kwargs)
        except SimkitError as exc:
            self.add(exc)
            return default

    def ok_since(self, count: int) -> bool:
        """No problem was added since there were `count` of them."""
        return len(self._errors) == count

    def raise_if_any(self) -> None:
        if len(self._errors) == 1:
            raise self._errors[0]
        if self._errors:
            raise SimkitErrors(self._errors)


def one_line(text: str) -> str:
    """`text` with line breaks and other control characters written as escapes: every error is one line
    however odd the key or value it quotes (a YAML key may hold a newline)."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def closest(name: str, valid: list[str] | tuple[str, ...], n: int = 3) -> list[str]:
    """The valid names closest to `name`, best first (what an 'unknown name' error suggests)."""
    import difflib

    return difflib.get_close_matches(str(name), list(valid), n=n, cutoff=0.4)


def close_names(name: str, valid: list[str] | tuple[str, ...], n: int = 3) -> str:
    """Text listing the valid names closest to `name` (for 'unknown name' errors)."""
    close = closest(name, valid, n)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    shown = ", ".join(sorted(valid)[:12])
    more = ", ..." if len(valid) > 12 else ""
    return f"allowed: {shown}{more}"
