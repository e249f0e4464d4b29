"""Why a job's rows failed, counted: the "reason → rows" table beside the failed-rows download.

Rows failing for the same cause carry the same error text (the processors word their errors
per cause, not per row), so grouping by the text is the count a person wants. It reads the
failed rows only, through the partial index on them, when the page is loaded and when a poll
saw more rows fail (at most every few seconds per open page), never on the poll itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import Count

from .models import Job, Row, RowStatus

MAX_REASONS = 20
REASON_CHARS = 300


@dataclass(frozen=True)
class Reason:
    text: str
    rows: int


def reasons(job: Job, limit: int = MAX_REASONS) -> tuple[list[Reason], int]:
    """The most frequent error texts among failed rows, and how many rows the rest hold."""
    if not job.failed:
        return [], 0
    counted = (
        Row.objects.filter(job=job, status=RowStatus.FAILED)
        .values("error")
        .annotate(rows=Count("index"))
        .order_by("-rows", "error")
    )
    top = [
        Reason((item["error"] or "(no message)")[:REASON_CHARS], item["rows"])
        for item in counted[:limit]
    ]
    # The job's counter holds the total (read with the job; no second count).
    return top, max(0, job.failed - sum(r.rows for r in top))
