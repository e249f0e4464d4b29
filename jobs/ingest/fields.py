"""Which CSV column a problem lies in: the one walk over a record's fields, on the error path.

The csv module names no field when it stops (text after a closing quote, a field over the size
limit, a quote never closed), and a bad byte or NUL is found in the text, not in a field. This
walks the record's text field by field, quoting as the reader does, and stops at the first field
with a problem; it reads only the lines it needs, and holds no more than one field's worth.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from .text import BAD_CHAR

_QUOTE = '"'


def problem_field(
    lines: Iterable[str],
    delimiter: str,
    field_limit: int,
    *,
    bad_char_only: bool = False,
    one_record: bool = False,
) -> int | None:
    """The 1-based field number, in its record, of the first problem in `lines` (physical lines,
    newlines kept, the first starting a record): a bad byte or NUL (as text.BAD_CHAR marks it),
    text after a closing quote, a field longer than `field_limit`, or a quote never closed.

    `bad_char_only`: look for a bad byte or NUL only, reading the rest as the lenient reader
    does (a quoted field may go on after its closing quote). `one_record`: the problem is in
    the first record; past its end, stop. None when no field has a problem.
    """
    lines = iter(lines)
    ends = re.compile(f"[{re.escape(delimiter)}\r\n]")
    text, at, field = next(lines, ""), 0, 1
    while text:
        if text.startswith(_QUOTE, at):
            close, text = _closing_quote(text, at, lines, field_limit)
            if close is None:
                # Never closed, or longer than any field may be before it closes.
                return None if bad_char_only and not BAD_CHAR.search(text, at) else field
            if BAD_CHAR.search(text, at, close):
                return field
            length = close - at - 1 - text.count('""', at + 1, close)
            if not bad_char_only and length > field_limit:
                return field
            at = close + 1
            if at < len(text) and text[at] not in ("\r", "\n", delimiter):
                if not bad_char_only:
                    return field  # text after the closing quote
                # Lenient: the field goes on to the next delimiter.
        stop = ends.search(text, at)
        end = stop.start() if stop else len(text)
        if BAD_CHAR.search(text, at, end):
            return field
        if not bad_char_only and end - at > field_limit:
            return field
        if stop is None:
            return None
        if stop.group() == delimiter:
            at, field = end + 1, field + 1
            continue
        # The record ends with its line: the next line starts one.
        if one_record:
            return None
        text, at, field = next(lines, ""), 0, 1
    return None


def _closing_quote(text: str, at: int, lines, field_limit: int) -> tuple[int | None, str]:
    """The index of the quote that closes the field opened at `at`, reading more lines while it
    is open (bounded: a field past the limit stops there), and the text read so far."""
    search = at + 1
    while True:
        close = text.find(_QUOTE, search)
        if close < 0:
            if len(text) - at > 2 * field_limit + 2:
                return None, text  # a field cannot be this long, closed or not
            more = next(lines, None)
            if more is None:
                return None, text
            search = len(text)
            text += more
            continue
        if text.startswith(_QUOTE, close + 1):
            search = close + 2  # a doubled quote stands for one
            continue
        return close, text
