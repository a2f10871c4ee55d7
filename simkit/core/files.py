"""Writing output files so that nothing is ever half-written.

- `check_writable(path)`: before long work (a calibration, a live run), that the file can be
  written at all: its folder exists, is writable and has room (a full disk or a `ulimit -f` limit is
  found by writing a small probe file next to it).
- `write_atomic(path, text)`: readers see the old file or the whole new one; the new file gets the
  mode an ordinary new file would get (the user's umask), or the mode of the file it replaces.
- `append_line(path, line)`: one whole line appended under an exclusive lock, so concurrent writers
  never lose or interleave lines (the history store and `validate --record` use it).

Every failure is a SimkitError naming the file.
"""
from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path

from simkit.core.errors import SimkitError

PROBE_BYTES = 64 * 1024
"""What `check_writable` writes to see that there is room: more than any profile or record line."""


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if exc.errno == errno.EFBIG:
        return "file too large (a file-size limit such as `ulimit -f`?)"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "the folder is not writable" + (" (a read-only file system)" if exc.errno == errno.EROFS else "")
    return exc.strerror or str(exc)


def _folder_problem(target: Path) -> str | None:
    folder = target.parent
    if target.is_dir():
        return "is a directory, expected a file name"
    if not folder.exists():
        return f"the folder {str(folder)!r} does not exist"
    if not folder.is_dir():
        return f"{str(folder)!r} is not a folder"
    return None


def _temp_path(target: Path) -> Path:
    return target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"


def _open_new(path: Path, mode: int = 0o666) -> int:
    """A new file for writing; the kernel applies the umask to `mode` as for any new file."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def check_writable(path: str | os.PathLike, what: str | None = None, *, append: bool = False) -> None:
    """Raise a SimkitError now if `path` could not be written later (see the module docstring);
    `append`: the file itself is written into (so an existing one must be writable), not replaced."""
    target = Path(path)
    key = what
    problem = _folder_problem(target)
    if append and not problem and target.exists() and not os.access(target, os.W_OK):
        problem = "the file is not writable"
    if problem:
        raise SimkitError(f"cannot write: {problem}", file=str(path), key=key)
    probe = _temp_path(target)
    try:
        fd = _open_new(probe, 0o600)
    except OSError as exc:
        raise SimkitError(f"cannot write: {_reason(exc)}", file=str(path), key=key) from None
    try:
        _write_all(fd, b"\0" * PROBE_BYTES)
        os.fsync(fd)
    except OSError as exc:
        raise SimkitError(f"cannot write: {_reason(exc)}", file=str(path), key=key) from None
    finally:
        os.close(fd)
        _unlink(probe)


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def write_atomic(path: str | os.PathLike, text: str | bytes) -> None:
    """Write `text` (or bytes) to `path` so that readers see the old file or the whole new one, never a part."""
    target = Path(path)
    problem = _folder_problem(target)
    if problem:
        raise SimkitError(f"cannot write: {problem}", file=str(path))
    tmp = _temp_path(target)
    try:
        fd = _open_new(tmp)
    except OSError as exc:
        raise SimkitError(f"cannot write: {_reason(exc)}", file=str(path)) from None
    try:
        try:
            _write_all(fd, text.encode("utf-8") if isinstance(text, str) else text)
            os.fsync(fd)
            try:  # replacing a file keeps its mode, as writing into it would
                os.fchmod(fd, stat.S_IMODE(os.stat(target).st_mode))
            except FileNotFoundError:
                pass
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except OSError as exc:
        _unlink(tmp)
        raise SimkitError(f"cannot write: {_reason(exc)}; nothing was written", file=str(path)) from None
    except BaseException:  # Ctrl-C, SIGTERM: no temporary file is left behind
        _unlink(tmp)
        raise


def save_figure(fig, path: str | os.PathLike, **savefig_kwargs) -> None:
    """A matplotlib figure written atomically (savefig itself writes in place, piece by piece)."""
    import io

    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip(".").lower() or "png", **savefig_kwargs)
    write_atomic(path, buffer.getvalue())


def append_line(path: str | os.PathLike, line: bytes, what: str = "file") -> None:
    """Append `line` (one line, ending in a newline) to `path` under an exclusive `flock`, then fsync:
    concurrent writers never interleave, and a record is whole or absent (a failed write, such as on a
    full disk, is cut off again). A line left unfinished by a crashed writer is ended first, so ours
    starts on a fresh line."""
    import fcntl

    target = Path(path)
    try:
        fd = os.open(target, os.O_RDWR | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    except OSError as exc:
        raise SimkitError(f"cannot open {what} for writing: {_reason(exc)}", file=str(target)) from None
    size = None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        _write_all(fd, line)  # under the lock: a second write for the rest of a short one cannot interleave
        os.fsync(fd)
    except OSError as exc:
        if size is not None:
            _truncate(fd, size)  # a part of a line would be a broken record: take it back
        raise SimkitError(f"cannot write {what}: {_reason(exc)}; nothing was appended", file=str(target)) from None
    finally:
        os.close(fd)  # closing releases the lock


def _truncate(fd: int, size: int) -> None:
    try:
        os.ftruncate(fd, size)
    except OSError:
        pass
