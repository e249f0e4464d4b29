"""A failed row's reason: the cause a person recognises, the same for every row that failed
for it, stored beside the row's full error and counted on the job page.

Processors that know the cause name it (``RowError(message, reason=…)``: "HTTP API answered 500
Internal Server Error" without the body that came with it). Any other error is taken as its
reason with the parts that differ from row to row taken out, conservatively: ids (UUIDs, long hex
or mixed letters-and-digits tokens), timestamps, long numbers, decimals and quoted values holding
a digit. Short numbers stay here: "answered 404" and "answered 500" are different causes, and
one row's error cannot tell them from a row's own number ("boom on 11"); the job page's count
tells them apart across rows (jobs/failures.py).
"""

from __future__ import annotations

import functools
import re

REASON_CHARS = 200
GAP = "…"

_UUID = re.compile(r"\b[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}\b", re.I)
_TIMESTAMP = re.compile(
    r"\b\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b"
    r"|\b\d{2}:\d{2}:\d{2}(?:[.,]\d+)?\b"
)
# A quoted value with a digit in it is data (an id, a count, a date), not a name.
_QUOTED = re.compile(r"""(['"`])(?=[^'"`\n]{0,200}?\d)[^'"`\n]{1,200}?\1""")
# A long token mixing letters and digits (and - or _), or a long hex run with a digit in it:
# a request id, a trace id, a memory address.
_TOKEN = re.compile(
    r"\b(?:0x[0-9a-f]+|(?=[0-9a-f]*\d)[0-9a-f]{8,}|(?=[\w-]*\d)(?=[\w-]*[a-z])[\w-]{8,})\b",
    re.I,
)
# A number with its thousands grouped ("5,000,000", as this project writes counts and sizes).
_GROUPED = re.compile(r"(?<![\w./:-])\d{1,3}(?:,\d{3})+(?![\w]|[.,]\d)")
_DECIMAL = re.compile(r"(?<![\w./:-])\d+[.,]\d+(?![\w.])")
_LONG_NUMBER = re.compile(r"(?<![\w./:-])\d{4,}(?![\w])")
_SPACE = re.compile(r"\s+")
_GAPS = re.compile(rf"{GAP}(?:[\s,;]*{GAP})+")


# A reason is at most REASON_CHARS long: what lies past this much of an error never shows in it.
READ_CHARS = 10 * REASON_CHARS


@functools.lru_cache(maxsize=1024)
def reason_for(error: str | None) -> str | None:
    """`error` without its row-to-row variable parts; None for no error.

    Run in the sync point's transaction for each failed row (on SQLite, under its one write
    lock): rows failing with one text are worked out once, and a long error only in its head."""
    if error is None:
        return None
    text = _SPACE.sub(" ", error[:READ_CHARS]).strip()
    text = _UUID.sub(GAP, text)
    text = _TIMESTAMP.sub(GAP, text)
    text = _QUOTED.sub(lambda m: m.group(1) + GAP + m.group(1), text)
    text = _TOKEN.sub(GAP, text)
    text = _GROUPED.sub(GAP, text)
    text = _DECIMAL.sub(GAP, text)
    text = _LONG_NUMBER.sub(GAP, text)
    text = _GAPS.sub(GAP, text)
    return clip(text)


def clip(text: str, limit: int = REASON_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + GAP
