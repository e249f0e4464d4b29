"""The job page's results preview: its first rows (all, or the failed ones) and whether they can
still change while the job runs."""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

from . import progress, results
from .models import Job, JobStatus, RowStatus

LIMIT = 50
FINAL_ROW_STATUSES = frozenset({RowStatus.SUCCEEDED, RowStatus.FAILED, RowStatus.CANCELLED})


def first_rows(job: Job, status: str) -> list[dict[str, Any]]:
    rows = []
    # Closed explicitly: on PostgreSQL the iterator is a COPY that must be cancelled, not drained.
    with contextlib.closing(results.iter_rows(job, status)) as it:
        for index, ref, row_status, data, output, error in itertools.islice(it, LIMIT):
            rows.append(
                {
                    "number": index + 1,
                    "ref": ref,
                    "status": row_status,
                    "data": list(data or []),
                    "output": output or {},
                    "error": error,
                }
            )
    return rows


def settled(job: Job, rows: list[dict[str, Any]], failed_only: bool) -> bool:
    """Whether the preview can only change with the job's status (a retry, a cancel, the end).

    Until then it reloads as rows finish. A job of 1M rows finishes its first 50 in a moment,
    and from then on its page asks for the progress alone, once a second.
    """
    if not progress.still_moving(job):
        return True
    still_reading = job.status in (JobStatus.QUEUED, JobStatus.VALIDATING)
    if len(rows) < LIMIT and (failed_only or still_reading):
        return False  # more rows may come: new failures, or rows still being read
    return all(row["status"] in FINAL_ROW_STATUSES for row in rows)
