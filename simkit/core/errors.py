"""The one error type simkit raises for bad input; the CLI prints it on one line and exits 2."""
from __future__ import annotations


class SimkitError(Exception):
    """A problem with user input: a plan, a profile, a flag.

    ``str(err)`` reads ``FILE:LINE: KEY: message`` with the parts that are known.
    """

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 key: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.key = key

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        key = f"{self.key}: " if self.key else ""
        return f"{where}{key}{self.message}"


def close_names(name: str, valid: list[str] | tuple[str, ...], n: int = 3) -> str:
    """Text listing the valid names closest to `name` (for 'unknown name' errors)."""
    import difflib

    close = difflib.get_close_matches(str(name), list(valid), n=n, cutoff=0.4)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    shown = ", ".join(sorted(valid)[:12])
    more = ", ..." if len(valid) > 12 else ""
    return f"allowed: {shown}{more}"
