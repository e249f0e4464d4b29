"""JSON that comes from outside, read with bounds: nesting depth, finite numbers, text only.

The stdlib parser recurses once per nesting level (a value nested 10,000 deep ends in a
RecursionError) and accepts NaN, Infinity and numbers like 1e400 that become float infinity,
and `\ud800` (half of a character, a lone surrogate: no text at all, which no encoder writes),
none of which is JSON another program (or PostgreSQL's jsonb) will read back. Every JSON that
enters the system (request bodies, form fields, JSONL lines) goes through `loads` here instead.
"""

from __future__ import annotations

import functools
import json
import math
import operator
import re
import sys
from collections.abc import Callable
from typing import Any

import orjson

# Far deeper than any table cell or processor params need, and far below the parser's recursion.
MAX_DEPTH = 64


class JSONLimitError(ValueError):
    """JSON that parses but breaks a bound.

    `problem` reads after a subject ("Line 3 " + problem) with a `{where}` slot; `path` (keys and
    indexes) and `char` (1-based character in the text) say where, when known; `phrase()` fills
    the slot.
    """

    # The key an object held twice, for that problem.
    key: str | None = None

    def __init__(
        self, problem: str, *, path: list[str | int] | None = None, char: int | None = None
    ):
        self.problem = problem
        self.path = path
        self.char = char
        super().__init__(self.phrase())

    def where(self) -> str:
        if self.path:
            return f"at {format_path(self.path)}"
        if self.char is not None:
            return f"at character {self.char}"
        return ""

    def phrase(self, where: str | None = None) -> str:
        where = self.where() if where is None else where
        return self.problem.format(where=f" {where}" if where else "")


class _NonFinite(Exception):
    def __init__(self, text: str):
        self.text = text


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NonFinite(text)
    return value


def _no_constant(name: str) -> Any:
    raise _NonFinite(name)


_SENTINEL = object()
_TOO_DEEP = "is nested more than {} levels deep{{where}}"
_NOT_TEXT = (
    "holds \\u{:04x}{{where}}, half of a character (a lone surrogate): "
    "strings must be valid Unicode text"
)
# Decoded text cannot hold a surrogate; only a JSON escape can put one in a string. A pair of
# them is one character once parsed, so a surrogate left in a parsed string is a lone one.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
# What no database stores: a lone surrogate, or NUL (U+0000: PostgreSQL's text and jsonb refuse it).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_NON_FINITE = (
    "holds the number {}{{where}}; JSON numbers must be finite "
    "(no NaN or Infinity, and within a 64-bit float's range)"
)


def _sentinel_float(text: str) -> Any:
    value = float(text)
    return _SENTINEL if math.isinf(value) else value


class _RepeatedKey(Exception):
    def __init__(self, key: str):
        self.key = key


def _repeat_in(pairs: list[tuple[str, Any]]) -> str:
    """The first key given twice among `pairs` (which hold one)."""
    seen: set[str] = set()
    return next(k for k, _ in pairs if k in seen or seen.add(k))


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        raise _RepeatedKey(_repeat_in(pairs))
    return value


_REPEATED_KEY = (
    "has the key {} twice in one object{{where}}; keys must be unique "
    "(the second value would replace the first, and the first would be lost)"
)

# Built once: json.loads with any hook builds a new decoder per call, which costs more than the
# parse of a short JSONL line.
_DECODER = json.JSONDecoder(parse_float=_finite_float, parse_constant=_no_constant)
_UNIQUE_DECODER = json.JSONDecoder(
    parse_float=_finite_float, parse_constant=_no_constant, object_pairs_hook=_unique_keys
)


def loads(
    text: str | bytes,
    *,
    max_depth: int = MAX_DEPTH,
    replace_halves: bool = False,
    unique_keys: bool = True,
) -> Any:
    """json.loads that refuses nesting deeper than `max_depth` and numbers that are not finite.

    Raises json.JSONDecodeError for text that is not JSON and JSONLimitError (also a ValueError)
    for the bounds, with the place (path of keys and indexes, and the character) when known.
    `replace_halves`: a lone surrogate becomes U+FFFD instead (an outside service's answer,
    which the sender cannot fix, rather than input a person can).
    `unique_keys`: an object with a key twice is refused, since parsing keeps only its last
    value; an outside service's answer, which nobody can fix, passes False.
    """
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8")
    try:
        value = (_UNIQUE_DECODER if unique_keys else _DECODER).decode(text)
    except RecursionError:
        raise _too_deep(text, max_depth) from None
    except _NonFinite as exc:
        raise _non_finite(text, exc.text) from None
    except _RepeatedKey as exc:
        raise _repeated_key(text, exc.key) from None
    except json.JSONDecodeError:
        raise
    except ValueError:
        # int() refuses more digits than the interpreter converts, and its message gives advice
        # about an interpreter setting: say which number, and where, instead.
        raise _long_integer(text) from None
    # Counting brackets is C-speed; the walk only runs when the text could be too deep.
    if text.count("[") + text.count("{") > max_depth and depth(value) > max_depth:
        raise _too_deep(text, max_depth)
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        # Escaped pairs (an emoji as Python's json.dumps writes it) are common: orjson refuses a
        # lone half at C speed, so the walk in Python only runs when it does.
        try:
            orjson.loads(text)
        except orjson.JSONDecodeError:
            if replace_halves:
                return with_valid_text(value)
            check_value(value, max_depth=max_depth)
    return value


# Finds where a value ends without judging it: only on the error path of raw_decode, whose
# locating functions then read that value alone.
_LOOSE = json.JSONDecoder(
    parse_float=lambda _text: 0.0, parse_int=lambda _text: 0, parse_constant=lambda _name: 0.0
)


def raw_decode(
    text: str, start: int, *, max_depth: int = MAX_DEPTH, within: int = 0
) -> tuple[Any, int]:
    """The JSON value that starts at index `start` of `text` (no whitespace before it) and the
    index after it, with the bounds and errors of `loads` (unique keys, text only).

    For reading a long document one value at a time (the items of a large list) without
    building the rest. A problem's `path` is relative to this value; `char` counts in `text`.
    `within` is how many lists and objects of the document hold the value: the depth bound is
    the document's.
    """
    room = max_depth - within
    try:
        value, end = _UNIQUE_DECODER.raw_decode(text, start)
    except RecursionError:
        raise _too_deep(text, max_depth, start, within) from None
    except json.JSONDecodeError:
        raise
    except (_NonFinite, _RepeatedKey, ValueError):
        # Not finite, a key twice, or an integer too long: `loads` of this value alone says
        # which and where (once its depth is known to be within the bound).
        try:
            loose, end = _LOOSE.raw_decode(text, start)
        except RecursionError:
            raise _too_deep(text, max_depth, start, within) from None
        if depth(loose) > room:
            raise _too_deep(text, max_depth, start, within) from None
        loads(text[start:end], max_depth=max_depth)
        raise  # not reached: loads raised the same problem, located
    if text.count("[", start, end) + text.count("{", start, end) > room and depth(value) > room:
        raise _too_deep(text, max_depth, start, within)
    if text.find("\\u", start, end) >= 0 and _SURROGATE_ESCAPE.search(text, start, end):
        loads(text[start:end], max_depth=max_depth)
    return value, end


class _Repeated(dict):
    """An object that had a key twice, kept as parsed so that the walk can say where it is."""

    key = ""


def _mark_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) == len(pairs):
        return value
    marked = _Repeated(value)
    marked.key = _repeat_in(pairs)
    return marked


def _repeated_key(text: str, key: str) -> JSONLimitError:
    # Only on the error path: parse again, marking such objects, to find the first one's path.
    path: list[str | int] | None = None
    try:
        marked = json.JSONDecoder(object_pairs_hook=_mark_repeats).decode(text)
        path = _path_to(marked, lambda item: type(item) is _Repeated)
    except (RecursionError, ValueError):
        pass  # too deep or too long a number further on: the key is still named
    if path is not None:
        key = functools.reduce(operator.getitem, path, marked).key
    return repeated_key_error(key, path)


def repeated_key_error(key: str, path: list[str | int] | None = None) -> JSONLimitError:
    """The problem of an object that has `key` twice (at `path`, if known)."""
    shown = json.dumps(key if len(key) <= 60 else key[:60] + "…", ensure_ascii=False)
    # Braces in the key must not be read as the message's {where} slot.
    error = JSONLimitError(
        _REPEATED_KEY.format(shown.replace("{", "{{").replace("}", "}}")), path=path
    )
    error.key = key
    return error


def with_valid_text(value: Any) -> Any:
    """`value` with every lone surrogate and NUL in its strings and keys replaced by U+FFFD."""
    if isinstance(value, str):
        return valid_text(value)
    if isinstance(value, list):
        return [with_valid_text(item) for item in value]
    if isinstance(value, dict):
        return {
            valid_text(k) if isinstance(k, str) else k: with_valid_text(v) for k, v in value.items()
        }
    return value


def depth(value: Any) -> int:
    """Nesting depth of a parsed value (a scalar is 0, [] or {} is 1), without recursion."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def check_value(value: Any, *, max_depth: int = MAX_DEPTH) -> None:
    """Apply the same bounds to a value already in memory (e.g. rows built in Python); also the
    walk that says where a parsed text's lone surrogate is."""
    stack: list[tuple[Any, int, list]] = [(value, 0, [])]
    while stack:
        item, level, path = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise JSONLimitError(_NON_FINITE.format(item), path=path)
        if isinstance(item, str):
            _refuse_halves(item, path)
            continue
        if isinstance(item, dict):
            for key in item:
                if isinstance(key, str):
                    _refuse_halves(key, path, in_key=True)
            pairs = list(item.items())
        elif isinstance(item, list):
            pairs = list(enumerate(item))
        else:
            continue
        if level + 1 > max_depth:
            raise JSONLimitError(_TOO_DEEP.format(max_depth), path=path)
        stack.extend((child, level + 1, [*path, key]) for key, child in pairs)


def _refuse_halves(text: str, path: list, *, in_key: bool = False) -> None:
    found = _SURROGATE.search(text)
    if found:
        problem = _NOT_TEXT.format(ord(found.group()))
        if in_key:
            problem = problem.replace("{where}", " in a key{where}", 1)
        raise JSONLimitError(problem, path=path)


def format_path(path: list[str | int]) -> str:
    if not path:
        return "the top level"
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def line_and_column(text: str, char: int) -> tuple[int, int]:
    """1-based line and column of the 1-based character `char` in `text`."""
    before = text[: char - 1]
    line = before.count("\n") + 1
    return line, char - (before.rfind("\n") + 1)


_OBJECT_START = re.compile(r"[ \t\n\r]*\{")
# A JSON string (skipped whole, at C speed) or a bracket.
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def container_end(text: str, start: int) -> int:
    """The index after the list or object whose inside starts at `start`, its brackets counted
    and its strings skipped unread (not judged): for passing over the rest of a list that is
    refused anyway."""
    level = 1
    for match in _TOKEN.finditer(text, start):
        token = match.group()
        if token[0] == '"':
            continue
        level += 1 if token in "[{" else -1
        if level == 0:
            return match.end()
    raise json.JSONDecodeError("Expecting ']'", text, len(text))


def _too_deep(text: str, max_depth: int, start: int = 0, within: int = 0) -> JSONLimitError:
    # Only on the error path: find where the nesting passes the bound, and the last string seen
    # at the top level of an object (the key holding the deep value), in the value at `start`
    # (which `within` lists and objects hold).
    level, key = within, None
    for match in _TOKEN.finditer(text, start):
        token = match.group()
        if token[0] == '"':
            if level == within + 1:
                key = token
        elif token in "[{":
            level += 1
            if level > max_depth:
                path = None
                if key is not None and _OBJECT_START.match(text, start):
                    try:
                        path = [json.loads(key)]
                    except ValueError:
                        path = None
                return JSONLimitError(
                    _TOO_DEEP.format(max_depth), path=path, char=match.start() + 1
                )
        else:
            level -= 1
    return JSONLimitError(_TOO_DEEP.format(max_depth))


def _non_finite(text: str, literal: str) -> JSONLimitError:
    # Parse again with a marker in place of the bad number to say where it is.
    try:
        marked = json.loads(
            text, parse_float=_sentinel_float, parse_constant=lambda _name: _SENTINEL
        )
    except (ValueError, RecursionError):
        marked = None
    path = _path_to(marked, lambda item: item is _SENTINEL) if marked is not None else None
    return JSONLimitError(_NON_FINITE.format(literal), path=path)


def _long_integer(text: str) -> JSONLimitError:
    digits = sys.get_int_max_str_digits()

    def marked_int(literal: str) -> Any:
        return _SENTINEL if len(literal.lstrip("-")) > digits else 0

    try:
        marked = json.loads(text, parse_int=marked_int)
    except (ValueError, RecursionError):
        marked = None
    path = _path_to(marked, lambda item: item is _SENTINEL) if marked is not None else None
    return JSONLimitError(f"holds an integer of more than {digits:,} digits{{where}}", path=path)


def _path_to(value: Any, found: Callable[[Any], bool]) -> list[str | int] | None:
    """The keys and indexes to the first item of `value` (depth first) that `found` picks."""
    stack: list[tuple[Any, list]] = [(value, [])]
    while stack:
        item, path = stack.pop()
        if found(item):
            return path
        if isinstance(item, dict):
            stack.extend((child, [*path, key]) for key, child in reversed(item.items()))
        elif isinstance(item, list):
            stack.extend((child, [*path, i]) for i, child in reversed(list(enumerate(item))))
    return None


# Nineteen digits in a row: a number that may be an integer past 64 bits (or digits in a
# string, which only costs the slower parse).
_LONG_NUMBER = re.compile(r"\d{19}")
_LONG_NUMBER_BYTES = re.compile(rb"\d{19}")


def fast_loads(text: str | bytes) -> Any:
    """JSON this system wrote or has already checked, at orjson's speed; the stdlib's parser
    where a number may be an integer beyond 64 bits, which orjson reads as a float (losing its
    digits) instead of refusing it."""
    long_number = _LONG_NUMBER_BYTES if isinstance(text, (bytes, bytearray)) else _LONG_NUMBER
    if long_number.search(text):
        return json.loads(text)
    return orjson.loads(text)


def dumps_exact(value: Any) -> str:
    """JSON text of a value read by `loads` (so finite, no half characters), as `dumps` writes
    it but with a NUL kept as its escape: for input that a reader refuses, not mends."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # an integer beyond 64 bits
        return json.dumps(value, ensure_ascii=False)


def dumps(value: Any) -> str:
    """JSON text: orjson (far faster than the stdlib), else the stdlib for what orjson refuses
    (integers beyond 64 bits); anything else unknown becomes its str()."""
    try:
        text = orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        if "\\u0000" not in text:
            return text
        # NUL: jsonb refuses it, and the rows of the whole sync point with it.
    except TypeError:
        pass
    # orjson also refuses half a character (a processor's output may hold one): it becomes
    # U+FFFD, as a decoder's errors="replace" would write it, since no database stores it.
    # The replaced value, and the str() of what is unknown, serve the stdlib's writer too: it
    # writes a NUL as an escape no replacement in its text finds.
    replaced = with_valid_text(value)
    try:
        return orjson.dumps(replaced, default=_valid_str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        # The stdlib writes NaN and Infinity, which no JSON reader (jsonb included) accepts:
        # null, as orjson writes them, so a value is stored alike whatever else the row holds.
        return valid_text(json.dumps(_finite(replaced), ensure_ascii=False, default=_valid_str))


def _finite(value: Any) -> Any:
    """`value` with every NaN and infinity in it as None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]  # a tuple is written as an array anyway
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def _valid_str(value: Any) -> str:
    return valid_text(str(value))


def valid_text(text: str) -> str:
    """`text` with every lone surrogate and NUL replaced by U+FFFD: text every encoder, and
    every database, can write."""
    return _UNSTORABLE.sub("\ufffd", text)
