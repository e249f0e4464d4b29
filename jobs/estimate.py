"""How long a job will take (and, for an LLM, how many tokens it will use), before it starts.

The time comes from what this processor measured on the person's own finished jobs (rows
processed per second of their run, pauses included, so it errs long); without such a job, from
the sample run's time per row. Tokens come from the sample run's usage, scaled to the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from .models import Job, JobStatus

HISTORY_JOBS = 10


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
        .only("succeeded", "failed", "started_at", "finished_at")[:HISTORY_JOBS]
    )
    done = seconds = 0.0
    jobs = 0
    for job in finished:
        span = (job.finished_at - job.started_at).total_seconds()
        if span > 0 and job.succeeded + job.failed:
            done += job.succeeded + job.failed
            seconds += span
            jobs += 1
    if not jobs or seconds <= 0:
        return None
    rate = done / seconds
    source = f"your last {jobs} {processor} job{'s' if jobs != 1 else ''}"
    return Estimate(rows, rate, timedelta(seconds=rows / rate), source)


def from_sample(
    rows: int, sample_rows: int, seconds: float, *, io_bound: bool, concurrency: int
) -> Estimate | None:
    """An I/O processor's sample ran its rows side by side, so its time is one row's latency,
    and the job overlaps `concurrency` of them; a CPU one ran them one after another."""
    if sample_rows <= 0 or seconds <= 0:
        return None
    rate = max(1, concurrency) / seconds if io_bound else sample_rows / seconds
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
