"""YAML reading that remembers where each key was written and rejects duplicate keys,
and atomic writing (a file is whole or absent)."""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from simkit.core.errors import SimkitError



class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe loading that also reads `1e9` and `1.0e9` as numbers: PyYAML follows YAML 1.1, which wants a
    dot and a signed exponent (`1.0e+9`), so `1e12` would silently stay a string (YAML 1.2 reads a number)."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


@dataclass
class Located:
    """Parsed YAML data plus the 1-based line of every key path (tuple of keys/indices)."""

    data: Any
    file: str | None = None
    lines: dict[tuple, int] = field(default_factory=dict)
    origins: dict[tuple, str] = field(default_factory=dict)  # key path -> where else it was set ('--set ...')

    def line(self, path: tuple) -> int | None:
        """Line of `path`, or of its nearest written ancestor."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get((), None)

    def error(self, path: tuple, message: str) -> SimkitError:
        key = ".".join(str(p) for p in path) if path else None
        for n in range(len(path), 0, -1):
            if path[:n] in self.origins:  # the value came from the command line, not from the file
                return SimkitError(message, file=self.origins[path[:n]], key=key)
        return SimkitError(message, file=self.file, line=self.line(path), key=key)


def _walk(node: yaml.Node, path: tuple, lines: dict, file: str | None) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                dotted = ".".join(str(p) for p in path + (key,))
                raise SimkitError(f"duplicate key (first written on line {seen[key]})",
                                  file=file, line=line, key=dotted)
            seen[key] = line
            _walk(value_node, path + (key,), lines, file)
            lines[path + (key,)] = line
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, path + (i,), lines, file)


def parse_yaml(text: str, file: str | None = None) -> Located:
    """Parse YAML text; errors name the file and line."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise SimkitError("the file is empty; expected a YAML mapping", file=file)
        lines: dict[tuple, int] = {}
        _walk(node, (), lines, file)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        message = f"not valid YAML: {exc.problem or exc}"
        if exc.problem == "but found another document":
            message = "not valid YAML: a second document ('---'); expected one mapping"
        elif (file and exc.context and ("flow" in exc.context or "quoted" in exc.context) and exc.context_mark
              and exc.problem_mark and exc.context_mark.line != exc.problem_mark.line):
            # an unclosed bracket or quote: the problem shows lines later, so say where it opened
            message += f" ({exc.context} started on line {exc.context_mark.line + 1})"
        raise SimkitError(message, file=file, line=line) from None
    except yaml.YAMLError as exc:
        raise SimkitError(f"not valid YAML: {exc}", file=file) from None
    finally:
        loader.dispose()
    return Located(data=data, file=file, lines=lines)


def read_yaml(path: str | os.PathLike) -> Located:
    """Read and parse a YAML file; a missing or unreadable file is a SimkitError."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SimkitError("file not found", file=str(path)) from None
    except IsADirectoryError:
        raise SimkitError("is a directory, expected a YAML file", file=str(path)) from None
    except UnicodeDecodeError:
        raise SimkitError("not a text file (not UTF-8)", file=str(path)) from None
    except OSError as exc:
        raise SimkitError(f"cannot read: {exc.strerror}", file=str(path)) from None
    if not text.strip():
        raise SimkitError("the file is empty; expected a YAML mapping", file=str(path))
    return parse_yaml(text, file=str(path))


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the whole new one, never a part."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
