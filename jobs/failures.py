"""Why a job's rows failed, counted: the "reason → rows" table beside the failed-rows download.

Rows are counted by their reason (jobs/reasons.py), not their full error: an HTTP API's 500s
carry each row's own request id or time in the body, and counted by the text they were hundreds
of one-row lines. Each reason shows up to two of its rows' full errors as examples (the least
and the greatest, from the same grouping: no second read). It reads the failed rows only,
through the partial index on them, when the page is loaded and when a poll saw more rows fail
(at most every few seconds per open page), never on the poll itself; the count is kept in the
cache for the job's state it was made in, so pages looking at the same state share it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from django.core.cache import cache
from django.db.models import Count, Max, Min
from django.db.models.functions import Coalesce

from .models import Job, Row, RowStatus
from .reasons import GAP

# A number of one to three digits standing alone: not part of a version, an address, a time or
# a word. Longer numbers are already "…" in a reason.
_SHORT_NUMBER = re.compile(r"(?<![\w.,:/-])\d{1,3}(?![\w]|[.,:/-]\w)")
_SLOT = "\x00"

MAX_REASONS = 20
# Reasons read for merge_numbered: past the most frequent this many, rows count as "other".
SCAN_GROUPS = 1000
REASON_CHARS = 300
NO_MESSAGE = "(no message)"
CACHE_SECONDS = 600


@dataclass(frozen=True)
class Reason:
    text: str
    rows: int
    # Full errors of rows counted here, when they say more than the reason does.
    examples: list[str] = field(default_factory=list)


def _examples(text: str, first: str | None, last: str | None) -> list[str]:
    shown = []
    for error in (first, last):
        if error and error != text and error[:REASON_CHARS] not in shown:
            shown.append(error[:REASON_CHARS])
    return shown


def _cache_key(job: Job, limit: int) -> str:
    # Every change to a job's rows moves its failed count or its updated_at (each sync point
    # saves it): a key of both is never read for rows other than those it was counted from.
    stamp = job.updated_at.timestamp() if job.updated_at else 0
    return f"failure-reasons:{job.pk}:{job.failed}:{stamp}:{limit}"


def reasons(job: Job, limit: int = MAX_REASONS) -> tuple[list[Reason], int]:
    """The most frequent reasons among failed rows, and how many rows the rest hold.

    Shared through the cache by everyone looking at the job in the same state: a finished job's
    rows are counted once, not at every page load."""
    if not job.failed:
        return [], 0
    key = _cache_key(job, limit)
    found = cache.get(key)
    if found is None:
        found = [(r.text, r.rows, r.examples) for r in count(job, limit)]
        cache.set(key, found, CACHE_SECONDS)
    top = [Reason(text, rows, examples) for text, rows, examples in found]
    # The job's counter holds the total (read with the job; no second count).
    return top, max(0, job.failed - sum(r.rows for r in top))


def count(job: Job, limit: int = MAX_REASONS) -> list[Reason]:
    """The count itself, without the cache."""
    counted = (
        Row.objects.filter(job=job, status=RowStatus.FAILED)
        # Rows failed before reasons were kept have none: their error is their reason.
        .annotate(why=Coalesce("reason", "error"))
        .values("why")
        .annotate(rows=Count("index"), first=Min("error"), last=Max("error"))
        .order_by("-rows", "why")
    )
    groups = [
        _Group(
            (item["why"] or NO_MESSAGE)[:REASON_CHARS], item["rows"], item["first"], item["last"]
        )
        for item in counted[:SCAN_GROUPS]
    ]
    merged = sorted(merge_numbered(groups), key=lambda g: (-g.rows, g.text))
    return [Reason(g.text, g.rows, _examples(g.text, g.first, g.last)) for g in merged[:limit]]


@dataclass
class _Group:
    text: str
    rows: int
    first: str | None
    last: str | None


def merge_numbered(groups: list[_Group]) -> list[_Group]:
    """Reasons that differ only in short numbers, counted as one where those numbers are data.

    A row's reason keeps its short numbers (jobs/reasons.py): alone, "answered 404" and "boom on
    11" look alike. Across rows they do not: a number naming the cause takes a few values, each
    shared by many rows; a row's own number (its line, an id) takes about as many values as
    there are rows. So among reasons of one shape, a number's place holding more distinct values
    than half the shape's rows reads "…"; the other places keep their values.
    """
    shapes: dict[str, list[tuple[list[str], _Group]]] = {}
    for group in groups:
        numbers = _SHORT_NUMBER.findall(group.text)
        if numbers:
            shape = _SHORT_NUMBER.sub(_SLOT, group.text)
            shapes.setdefault(shape, []).append((numbers, group))
    out: dict[str, _Group] = {g.text: g for g in groups}
    for shape, members in shapes.items():
        if len(members) < 2:
            continue
        rows = sum(group.rows for _, group in members)
        places = len(members[0][0])
        data = [len({numbers[i] for numbers, _ in members}) * 2 > rows for i in range(places)]
        if not any(data):
            continue
        pieces = shape.split(_SLOT)
        for numbers, group in members:
            values = [GAP if data[i] else numbers[i] for i in range(places)]
            text = pieces[0] + "".join(
                v + piece for v, piece in zip(values, pieces[1:], strict=True)
            )
            if text == group.text:
                continue
            del out[group.text]
            kept = out.get(text)
            if kept is None:
                out[text] = _Group(text, group.rows, group.first, group.last)
            else:
                kept.rows += group.rows
                kept.first = _least(kept.first, group.first, min)
                kept.last = _least(kept.last, group.last, max)
    return list(out.values())


def _least(a: str | None, b: str | None, pick) -> str | None:
    return b if a is None else a if b is None else pick(a, b)
