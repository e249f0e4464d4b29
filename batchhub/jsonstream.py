"""A JSON object read field by field, one list field of it item by item into a file.

A body of a million small rows parsed whole is a million Python objects at once (hundreds of
bytes each, many times the body). Here each item of the streamed field is parsed alone (with
jsonsafe's bounds), handed to a sink that writes it out as one JSON line, and dropped: the
memory is the body's text and one item, whatever the count.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import re
import tempfile
from collections.abc import Iterator
from typing import Any

from . import jsonsafe

_WS = re.compile(r"[ \t\n\r]*")
_VALUE_STARTS = frozenset('{["-0123456789tfnNI')
SPOOL_BYTES = 1024 * 1024
_WRITE_LINES = 1000
MAX_NAMED = 20


# The JSONLines made inside closing_files(), closed at its end.
_OPEN: contextvars.ContextVar[list | None] = contextvars.ContextVar("jsonlines_open", default=None)


@contextlib.contextmanager
def closing_files() -> Iterator[None]:
    """Close every JSONLines made within, when it ends: a request's rows file is dropped when
    the request is answered, not when the garbage collector breaks the cycles around it."""
    opened: list[JSONLines] = []
    token = _OPEN.set(opened)
    try:
        yield
    finally:
        _OPEN.reset(token)
        for lines in opened:
            lines.file.close()


class NotAnObject(ValueError):
    """The document is not a JSON object."""


class JSONLines:
    """The items of a JSON list, one JSON text a line in a temporary file (in memory while
    small): counted, the first kept, the ones that are not objects named, the longest line measured.

    Each item is written as jsonsafe.dumps_exact writes it (compact, key order, big integers and
    a NUL kept), not as the client's text: its whitespace and escapes are not stored."""

    def __init__(self) -> None:
        self.file = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)
        opened = _OPEN.get()
        if opened is not None:
            opened.append(self)
        self.count = 0
        self.first: Any = None
        # (index, type name) of the first items that are not objects, and how many there were.
        self.not_objects: list[tuple[int, str]] = []
        self.not_object_count = 0
        # The longest line in UTF-8 bytes, and the index of its item.
        self.longest = (0, 0)
        # True when the list was passed over unread after a limit (loads_object's stop_after).
        self.stopped = False
        self._pending: list[str] = []

    def add(self, value: Any) -> None:
        if self.count == 0:
            self.first = value
        if type(value) is not dict:
            self.not_object_count += 1
            if len(self.not_objects) < MAX_NAMED:
                self.not_objects.append((self.count, type(value).__name__))
        line = jsonsafe.dumps_exact(value)
        size = len(line) if line.isascii() else len(line.encode())
        if size > self.longest[0]:
            self.longest = (size, self.count)
        self._pending.append(line)
        self.count += 1
        if len(self._pending) >= _WRITE_LINES:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self.file.seek(0, 2)
            self.file.write(("\n".join(self._pending) + "\n").encode())
            self._pending.clear()

    def __len__(self) -> int:
        return self.count

    def lines(self) -> Iterator[str]:
        """Each item's JSON text, in order."""
        self._flush()
        self.file.seek(0)
        for raw in self.file:
            yield raw.decode().rstrip("\n")

    def __iter__(self) -> Iterator[Any]:
        for line in self.lines():
            yield loads_checked(line)

    def open(self):
        """The JSON lines as a binary file, from the start."""
        self._flush()
        self.file.seek(0)
        return self.file


def loads_checked(line: str) -> Any:
    """A line that jsonsafe has already read."""
    return jsonsafe.fast_loads(line)


def _skip(text: str, at: int) -> int:
    return _WS.match(text, at).end()


def _within(exc: jsonsafe.JSONLimitError, *prefix: str | int) -> jsonsafe.JSONLimitError:
    if exc.path is not None:
        exc.path = [*prefix, *exc.path]
    elif exc.char is None:
        exc.path = list(prefix)
    return exc


def loads_object(
    text: str,
    streamed: tuple[str, ...] = (),
    *,
    stop_after: int | None = None,
    objects_only: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The JSON object in `text`, with jsonsafe's bounds; a field named in `streamed` whose value
    is a list becomes a JSONLines of its items.

    A list that is refused anyway is passed over unread (its JSONLines `stopped`): one past
    `stop_after` items, or one in `objects_only` once it holds as many items that are not
    objects as an error names.

    Raises NotAnObject for any other JSON document (a list unread past its first character),
    json.JSONDecodeError and jsonsafe.JSONLimitError as jsonsafe.loads does (paths from the top).
    """
    if text.startswith("\ufeff"):
        raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    at = _skip(text, 0)
    first = text[at : at + 1]
    if not first or first not in _VALUE_STARTS:
        raise json.JSONDecodeError("Expecting value", text, at)  # no JSON at all
    if first != "{":
        if first != "[":
            jsonsafe.loads(text)  # one value, read to say what is wrong with it, if anything
        raise NotAnObject("The JSON body is not an object.")
    at = _skip(text, at + 1)
    data: dict[str, Any] = {}
    if text[at : at + 1] == "}":
        return _end(data, text, at + 1)
    while True:
        if text[at : at + 1] != '"':
            raise json.JSONDecodeError(
                "Expecting property name enclosed in double quotes", text, at
            )
        key, at = json.decoder.scanstring(text, at + 1)
        if key in data:
            raise jsonsafe.repeated_key_error(key)
        jsonsafe.check_value({key: None})  # a half character in the key
        at = _skip(text, at)
        if text[at : at + 1] != ":":
            raise json.JSONDecodeError("Expecting ':' delimiter", text, at)
        at = _skip(text, at + 1)
        if key in streamed and text[at : at + 1] == "[":
            limit = MAX_NAMED if key in objects_only else None
            data[key], at = _stream_list(text, at, key, stop_after, limit)
        else:
            try:
                data[key], at = jsonsafe.raw_decode(text, at, within=1)
            except jsonsafe.JSONLimitError as exc:
                raise _within(exc, key) from None
        at = _skip(text, at)
        separator = text[at : at + 1]
        if separator == "}":
            return _end(data, text, at + 1)
        if separator != ",":
            raise json.JSONDecodeError("Expecting ',' delimiter", text, at)
        at = _skip(text, at + 1)


def _end(data: dict[str, Any], text: str, at: int) -> dict[str, Any]:
    at = _skip(text, at)
    if at != len(text):
        raise json.JSONDecodeError("Extra data", text, at)
    return data


def _stream_list(
    text: str, at: int, key: str, stop_after: int | None, not_objects: int | None
) -> tuple[JSONLines, int]:
    sink = JSONLines()
    most = stop_after + 1 if stop_after is not None else None
    at = _skip(text, at + 1)
    if text[at : at + 1] == "]":
        return sink, at + 1
    decode, skip, add = jsonsafe.raw_decode, _WS.match, sink.add
    while True:
        try:
            value, end = decode(text, at, within=2)
        except jsonsafe.JSONLimitError as exc:
            raise _within(exc, key, sink.count) from None
        add(value)
        at = skip(text, end).end()
        separator = text[at : at + 1]
        if separator == "]":
            return sink, at + 1
        if sink.count == most or sink.not_object_count == not_objects:
            sink.stopped = True
            return sink, jsonsafe.container_end(text, end)
        if separator != ",":
            raise json.JSONDecodeError("Expecting ',' delimiter", text, at)
        at = skip(text, at + 1).end()
