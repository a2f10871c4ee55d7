"""YAML reading that remembers where each key was written and rejects what a plan or profile never
needs and an attacker could use: duplicate keys, aliases (a 200-byte alias bomb expands to gigabytes),
tags other than plain values (`!!python/object`), keys that are not plain names, deep nesting and
numbers too long to read. And atomic writing (a file is whole or absent).

Every problem found while walking the document is reported at once (`SimkitErrors`).
"""
from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from simkit.core.errors import Problems, SimkitError
from simkit.core.files import write_atomic  # noqa: F401  (written here before files.py existed)

MAX_FILE_BYTES = 64 * 2**20
"""Largest YAML file read (the biggest shipped file, a published-cases list, is 136 kB)."""
MAX_DEPTH = 32
"""Nesting levels a document may have (a plan needs 3, a calibrated profile 7)."""
MAX_NUMBER_DIGITS = 100
"""Characters of one integer: Python refuses to read more than 4300 digits, and no plan needs 100."""
_PLAIN_TAGS = {f"tag:yaml.org,2002:{name}" for name in ("null", "bool", "int", "float", "str", "seq", "map",
                                                         "timestamp")}


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """Safe loading that also reads `1e9` and `1.0e9` as numbers: PyYAML follows YAML 1.1, which wants a
    dot and a signed exponent (`1.0e+9`), so `1e12` would silently stay a string (YAML 1.2 reads a number)."""


_Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                              re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
                              list("-+0123456789"))


@dataclass
class Located:
    """Parsed YAML data plus the 1-based line of every key path (tuple of keys/indices).

    Loaders report problems into `problems` (`report`) and raise them all at the end."""

    data: Any
    file: str | None = None
    lines: dict[tuple, int] = field(default_factory=dict)
    origins: dict[tuple, str] = field(default_factory=dict)  # key path -> where else it was set ('--set ...')
    problems: Problems = field(default_factory=Problems, repr=False, compare=False)

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

    def report(self, path: tuple, message: str) -> None:
        """Record a problem at `path` and carry on (the loader raises every problem at its end)."""
        self.problems.add(self.error(path, message))

    def written(self, path: tuple) -> bool:
        """The user wrote `path` (in the file or with --set), rather than it taking its default."""
        return path in self.lines or path in self.origins


def _dotted(path: tuple) -> str | None:
    return ".".join(str(p) for p in path) if path else None


def _tag_name(tag: str) -> str:
    return "!!" + tag[len("tag:yaml.org,2002:"):] if tag.startswith("tag:yaml.org,2002:") else tag


def _check_node(node: yaml.Node, path: tuple, file: str | None, problems: Problems) -> bool:
    """Whether `node` holds a plain value; reports why not (a foreign tag, an over-long number)."""
    line = node.start_mark.line + 1
    if node.tag not in _PLAIN_TAGS:
        problems.add(SimkitError(f"the YAML tag {_tag_name(node.tag)!r} is not allowed; write a plain value",
                                 file=file, line=line, key=_dotted(path)))
        return False
    if node.tag.endswith(":int") and len(node.value) > MAX_NUMBER_DIGITS:
        problems.add(SimkitError(f"{node.value[:12]}... is not a number simkit can use (over {MAX_NUMBER_DIGITS} "
                                 "digits)", file=file, line=line, key=_dotted(path)))
        return False
    if node.tag.endswith((":int", ":float", ":timestamp")):
        try:  # a date such as 2026-13-45 or an int such as 0x_ matches YAML's pattern but is no value
            yaml.constructor.SafeConstructor().construct_object(node)
        except (ValueError, OverflowError, yaml.YAMLError) as exc:
            kind = {"int": "integer", "float": "number", "timestamp": "date"}[node.tag.rsplit(":", 1)[1]]
            problems.add(SimkitError(f"{node.value!r} is not a valid {kind} ({str(exc)[:80]})",
                                     file=file, line=line, key=_dotted(path)))
            return False
    return True


def _walk(node: yaml.Node, path: tuple, lines: dict, file: str | None, problems: Problems) -> None:
    lines[path] = node.start_mark.line + 1
    if not _check_node(node, path, file, problems):
        return
    if len(path) > MAX_DEPTH:
        problems.add(SimkitError(f"nested more than {MAX_DEPTH} levels deep", file=file,
                                 line=node.start_mark.line + 1, key=_dotted(path[:MAX_DEPTH])))
        return
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == "tag:yaml.org,2002:merge":
                problems.add(SimkitError("merge keys ('<<') are not allowed; write the keys out", file=file,
                                         line=line, key=_dotted(path)))
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                problems.add(SimkitError("a key must be a plain name, not a list or mapping", file=file, line=line,
                                         key=_dotted(path)))
                continue
            key = key_node.value
            if not _check_node(key_node, path + (key,), file, problems):
                continue
            if key_node.tag != "tag:yaml.org,2002:str":  # `1024:` is the int 1024 in the data: lines use it too
                key = yaml.constructor.SafeConstructor().construct_object(key_node)
                if not isinstance(key, (str, int, float, bool, type(None))):
                    key = key_node.value
            if key in seen:
                problems.add(SimkitError(f"duplicate key (first written on line {seen[key]})",
                                         file=file, line=line, key=_dotted(path + (key,))))
                continue
            seen[key] = line
            _walk(value_node, path + (key,), lines, file, problems)
            lines[path + (key,)] = line
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, path + (i,), lines, file, problems)


def _refuse_aliases(text: str, file: str | None) -> None:
    """Aliases (`*name`) are refused before anything is built: a few hundred bytes of nested aliases
    expand to billions of values. An alias needs an anchor (`&name`), so text without '&' is skipped.
    The error names the key the alias stands for (the event stream is followed to know the path)."""
    if "&" not in text:
        return
    loader = _Loader(text)
    stack: list[list] = []   # per open collection: [is_mapping, current key or item index, waiting for a key]
    try:
        while loader.check_event():
            event = loader.get_event()
            top = stack[-1] if stack else None
            if top is not None and top[0] and top[2] and isinstance(event, yaml.ScalarEvent):
                top[1], top[2] = event.value, False   # a mapping key: the next node is its value
                continue
            if isinstance(event, yaml.AliasEvent):
                path = tuple(frame[1] for frame in stack)
                raise SimkitError(f"YAML aliases are not allowed (*{event.anchor}); write the value out",
                                  file=file, line=event.start_mark.line + 1, key=_dotted(path))
            if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                stack.pop()
            elif isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                mapping = isinstance(event, yaml.MappingStartEvent)
                stack.append([mapping, None if mapping else 0, True])
                continue
            else:
                if not isinstance(event, yaml.ScalarEvent):
                    continue
            if stack:  # a value (scalar or a collection just closed) was read in the collection on top
                top = stack[-1]
                if top[0]:
                    top[2] = True
                else:
                    top[1] += 1
    except yaml.YAMLError:
        return  # not valid YAML: parse_yaml reports it with its line
    finally:
        loader.dispose()


def parse_yaml(text: str, file: str | None = None) -> Located:
    """Parse YAML text; errors name the file and line, every problem of the document at once."""
    _refuse_aliases(text, file)
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise SimkitError("the file is empty; expected a YAML mapping", file=file)
        lines: dict[tuple, int] = {}
        problems = Problems()
        _walk(node, (), lines, file, problems)
        problems.raise_if_any()
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        raise SimkitError(_syntax_message(exc, file), file=file, line=_mark_line(exc)) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow (a control character, ...)
        line = text.count("\n", 0, exc.position) + 1 if isinstance(exc.position, int) else None
        character = chr(exc.character) if isinstance(exc.character, int) else exc.character
        raise SimkitError(f"not valid YAML: {exc.reason}, character {character!r}", file=file, line=line) from None
    except yaml.YAMLError as exc:
        raise SimkitError(f"not valid YAML: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                          file=file) from None
    except (ValueError, OverflowError, TypeError, RecursionError) as exc:  # a value PyYAML's constructors choke on
        raise SimkitError(f"not valid YAML: {str(exc)[:200]}", file=file) from None
    finally:
        loader.dispose()
    return Located(data=data, file=file, lines=lines)


def _mark_line(exc: yaml.MarkedYAMLError) -> int | None:
    mark = exc.problem_mark or exc.context_mark
    return mark.line + 1 if mark else None


def _syntax_message(exc: yaml.MarkedYAMLError, file: str | None) -> str:
    if exc.problem == "but found another document":
        return "not valid YAML: a second document ('---'); expected one mapping"
    message = f"not valid YAML: {exc.problem or exc}"
    if (file and exc.context and ("flow" in exc.context or "quoted" in exc.context) and exc.context_mark
            and exc.problem_mark and exc.context_mark.line != exc.problem_mark.line):
        # an unclosed bracket or quote: the problem shows lines later, so say where it opened
        message += f" ({exc.context} started on line {exc.context_mark.line + 1})"
    return message


def read_yaml(path: str | os.PathLike) -> Located:
    """Read and parse a YAML file; a missing, unreadable, special or oversized file is a SimkitError."""
    p = Path(path)
    try:
        with os.fdopen(os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)), "rb") as fh:  # a FIFO: no wait
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):  # /dev/zero, a FIFO: would never end
                raise SimkitError("not a regular file, expected a YAML file", file=str(path))
            raw = fh.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise SimkitError("file not found", file=str(path)) from None
    except IsADirectoryError:
        raise SimkitError("is a directory, expected a YAML file", file=str(path)) from None
    except OSError as exc:
        raise SimkitError(f"cannot read: {exc.strerror}", file=str(path)) from None
    if len(raw) > MAX_FILE_BYTES:
        raise SimkitError(f"over {MAX_FILE_BYTES // 2**20} MiB; plans, profiles and published cases are far smaller",
                          file=str(path))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise SimkitError("not a text file (not UTF-8)", file=str(path)) from None
    if not text.strip():
        raise SimkitError("the file is empty; expected a YAML mapping", file=str(path))
    return parse_yaml(text, file=str(path))
