"""How long a job will take (and, for an LLM, how many tokens it will use), before it starts.

The time comes from the rate this processor kept on the person's own finished jobs, measured
between their progress samples while they worked (pauses, the wait before a retry, and the
start-up of a job left out: a job of a few rows is all start-up, and its rate says nothing of a
file of thousands); without such a job, for an I/O processor, from the sample run's latency. A
CPU processor's sample of a few rows is mostly its start-up too, so it gives no rate. Tokens come
from the sample run's usage, scaled to the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .models import Job, JobStatus
from .rates import GAP_S

HISTORY_JOBS = 10
# Rows a job's samples must span for its rate to count.
MIN_MEASURED_ROWS = 1_000


@dataclass(frozen=True)
class Estimate:
    rows: int
    rate: float  # rows per second
    duration: timedelta
    source: str  # what the rate was measured on, in words


def from_history(user, processor: str, rows: int) -> Estimate | None:
    finished = (
        Job.objects.filter(
            owner=user,
            processor=processor,
            status__in=[JobStatus.COMPLETED, JobStatus.PARTIAL],
            started_at__isnull=False,
            finished_at__isnull=False,
        )
        .order_by("-finished_at")
        .only(
            "samples",
            "succeeded",
            "failed",
            "started_at",
            "finished_at",
            "worked_seconds",
            "working_since",
        )[:HISTORY_JOBS]
    )
    done = seconds = 0.0
    jobs = 0
    for job in finished:
        processed = job.succeeded + job.failed
        measured, span = working_span(job.samples or [])
        # The samples give the steady rate when they cover most of the job; a long job keeps
        # only its recent ones (thinned beyond GAP_S apart), and a slow processor's commits can
        # be further apart than that: then its rows over the time it worked, start-up included.
        if measured < processed / 2 or not span:
            measured, span = processed, job.worked().total_seconds()
        if measured >= MIN_MEASURED_ROWS and span > 0:
            done += measured
            seconds += span
            jobs += 1
    if not jobs:
        return None
    rate = done / seconds
    source = f"your last {jobs} {processor} job{'s' if jobs != 1 else ''}"
    return Estimate(rows, rate, timedelta(seconds=rows / rate), source)


def working_span(samples: list[list[float]]) -> tuple[float, float]:
    """(rows, seconds) between consecutive progress samples while the job worked: a gap longer
    than GAP_S between two samples is a pause or a wait, not work."""
    rows = seconds = 0.0
    for (ta, da), (tb, db) in zip(samples, samples[1:], strict=False):
        span = tb - ta
        if 0 < span <= GAP_S:
            rows += max(0.0, db - da)
            seconds += span
    return rows, seconds


def from_sample(
    rows: int, sample_rows: int, seconds: float, *, io_bound: bool, concurrency: int
) -> Estimate | None:
    """An I/O processor's sample ran its rows side by side, so its time is one row's latency,
    and the job overlaps `concurrency` of them. A CPU one's few rows took mostly its start-up,
    tens of times a row's time in a job: no estimate."""
    if sample_rows <= 0 or seconds <= 0 or not io_bound:
        return None
    rate = max(1, concurrency) / seconds
    return Estimate(rows, rate, timedelta(seconds=rows / rate), f"the sample of {sample_rows} rows")


def tokens(sample: list[dict[str, Any]], rows: int) -> dict[str, int] | None:
    """The sample's tokens per row (from its usage), times the file's rows."""
    used = [r.get("usage") or {} for r in sample if r.get("usage")]
    if not used:
        return None
    per_row = sum(int(u.get("total_tokens", 0)) for u in used) / len(used)
    if per_row <= 0:
        return None
    return {"per_row": round(per_row), "total": round(per_row * rows)}
