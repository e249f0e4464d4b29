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

from dataclasses import dataclass, field

from django.core.cache import cache
from django.db.models import Count, Max, Min
from django.db.models.functions import Coalesce

from .models import Job, Row, RowStatus

MAX_REASONS = 20
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
    top = []
    for item in counted[:limit]:
        text = (item["why"] or NO_MESSAGE)[:REASON_CHARS]
        top.append(Reason(text, item["rows"], _examples(text, item["first"], item["last"])))
    return top
