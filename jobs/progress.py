"""What the job page says about a job's progress: the bar's segments, the stepper, the rate.

Everything here reads the job row alone (its counters and throughput samples), so a poll stays
O(1) in job size. The numbers must not flatter: cancelled rows are not "done", a paused job has no
ETA, and a finished job shows how long it took rather than its last instantaneous rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from . import charts, rates
from .models import ACTIVE, TERMINAL, Job, JobEvent, JobStatus

STAGES = [
    ("queued", "Queued"),
    ("validating", "Validating"),
    ("processing", "Processing"),
    ("finalizing", "Finalizing"),
    ("done", "Done"),
]
_STAGE_OF = {
    JobStatus.QUEUED: 0,
    JobStatus.VALIDATING: 1,
    JobStatus.PROCESSING: 2,
    JobStatus.PAUSED: 2,
    JobStatus.FINALIZING: 3,
}
# A queued job older than this is waiting on the workers, not just on the next moment.
QUEUED_SLOW_S = 5.0

SEGMENTS = (
    ("succeeded", "Succeeded"),
    ("failed", "Failed"),
    ("cancelled", "Cancelled"),
    # Not "in flight": a loop hands its threads a few rows each ahead, so more rows are started
    # than run at once (the job's concurrency).
    ("running", "Started"),
    ("pending", "Pending"),
)


@dataclass(frozen=True)
class Segment:
    key: str
    label: str
    rows: int
    percent: float  # of the total: the bar's width
    offset: float  # percent of the total before this segment: where it starts on the bar
    shown: str  # `rows` as the pages write counts (grouped)


def segments(job: Job) -> list[Segment]:
    """The bar: one segment per row state, widths in percent of the total (never over 100)."""
    total = job.total or 0
    out = []
    offset = 0.0
    for key, label in SEGMENTS:
        rows = max(0, getattr(job, key) or 0)
        percent = min(100.0 - offset, round(100 * rows / total, 2)) if total else 0.0
        out.append(Segment(key, label, rows, percent, round(offset, 2), f"{rows:,}"))
        offset += percent
    return out


def status_label(job: Job) -> str:
    """The status in words, the same on the badge, the stepper, the tab title and the list.

    "partial" in the API either way; a page says whether any row succeeded."""
    if job.status == JobStatus.PARTIAL:
        return "Completed with failures" if job.succeeded else "Every row failed"
    return job.get_status_display()


def still_moving(job: Job) -> bool:
    """Whether the page has something left to watch: an active job, or an ended one with rows
    still running: a cancel's rows in a request finish, a failed job's leftovers are cancelled by
    the reaper; either way the counts move."""
    return job.is_active or job.running > 0


def figures(job: Job, processed_rows: int) -> dict[str, str]:
    """The live partial's counts as every page writes them (thousands grouped), written here:
    a template filter per number costs the poll's render several times as much."""
    return {
        "total": f"{job.total:,}",
        "processed": f"{processed_rows:,}",
        "succeeded": f"{job.succeeded:,}",
        "failed": f"{job.failed:,}",
        "cancelled": f"{job.cancelled:,}",
        "running": f"{job.running:,}",
        "concurrency": f"{job.concurrency:,}",
    }


def processed(job: Job) -> int:
    """Rows the processor actually finished (cancelled rows never ran)."""
    return job.succeeded + job.failed


def percent_processed(job: Job) -> float:
    """Cut to a tenth, not rounded: 999,999 rows of a million read 99.9%, never 100%."""
    return (1000 * processed(job) // job.total) / 10 if job.total else 0.0


def _stop_stage(job: Job) -> int:
    """Where a cancelled or failed job stopped: processing once it started, reading the file
    once that began (its timeline says so; `total` is only known at the end of the reading)."""
    if job.started_at is not None:
        return 2
    if job.total or job.status == JobStatus.FAILED:
        return 1
    return 1 if JobEvent.objects.filter(job_id=job.pk, type="validating").exists() else 0


def stages(job: Job) -> list[dict[str, Any]]:
    """The stepper. A job that stopped early shows where it stopped and what it never reached."""
    ended_badly = job.status in (JobStatus.CANCELLED, JobStatus.FAILED)
    stop = _stop_stage(job) if ended_badly else None
    current = _STAGE_OF.get(job.status, len(STAGES) - 1)
    out = []
    for i, (key, label) in enumerate(STAGES):
        note = ""
        if key == "done" and job.status in TERMINAL:
            label = status_label(job)
        elif key == "processing" and job.status == JobStatus.PAUSED:
            note = "paused"
        if stop is not None:
            if i < stop:
                state = "done"
            elif i == stop:
                state, note = job.status, job.get_status_display().lower()
            elif key == "done":
                state = job.status
            else:
                state, note = "skipped", "not reached"
        elif i < current:
            state = "done"
        elif i == current:
            state = "current"
            if job.status in TERMINAL:
                state = "done" if job.status == JobStatus.COMPLETED else job.status
        else:
            state = "todo"
        out.append(
            {
                "key": key,
                "label": label,
                "state": state,
                "note": note,
                "current": i == current,
            }
        )
    return out


def recent_rate(job: Job, now: float | None = None) -> float | None:
    """Rows per second over the last RATE_WINDOW_S of working time; None while still unknown.

    Samples count cancelled rows too (they are "done" for the engine), so a cancel would read as
    a burst: only an active job has a recent rate, and a paused or queued one has none.
    """
    if job.status != JobStatus.PROCESSING:
        return None
    return rates.recent_rate(job.samples, timezone.now().timestamp() if now is None else now)


def average_rate(job: Job, worked: timedelta | None = None) -> float | None:
    """A finished job's rows processed per second of work (pauses and the wait before a retry
    left out); `worked`: the job's worked time when the caller has it already."""
    duration = worked if worked is not None else job.duration
    if duration is None or duration.total_seconds() <= 0:
        return None
    return processed(job) / duration.total_seconds()


def eta(job: Job, rate: float | None, now: float | None = None) -> timedelta | None:
    """Time still to run: the rows left at `rate`, or at the clock's rate when the job gets the
    workers only part of the time (rates.estimate_rate)."""
    remaining = job.pending + job.running
    if job.status != JobStatus.PROCESSING or remaining <= 0:
        return None
    if now is not None:
        since = job.working_since.timestamp() if job.working_since else None
        rate = rates.lower_known(rate, rates.clock_rate(job.samples, now, since))
    if not rate:
        return None
    return timedelta(seconds=remaining / rate)


def waiting_for(job: Job, now=None, rate: float | None = None) -> str:
    """Why nothing moves yet, in words; "" when the job is moving or done. `rate`: the job's
    recent rows per second, when the caller has it (rows waiting for another try while others
    still finish are not worth a word)."""
    now = now or timezone.now()
    if job.status == JobStatus.PROCESSING and job.retry_reason and job.pending > 0 and not rate:
        return retry_wait(job, now)
    if job.status == JobStatus.QUEUED:
        waited = (now - job.created_at).total_seconds()
        text = "Waiting for a worker to read the input file."
        if waited > QUEUED_SLOW_S:
            active = (
                Job.objects.filter(owner_id=job.owner_id, status__in=ACTIVE)
                .exclude(pk=job.pk)
                .count()
            )
            text += (
                f" Every worker is busy or none is running; you have {active:,} other active "
                f"job{'s' if active != 1 else ''} (the limit is "
                f"{settings.BATCHHUB_MAX_ACTIVE_JOBS:,} active jobs per account)."
            )
        return text
    if job.status == JobStatus.VALIDATING:
        return "Reading and checking the input file."
    if job.status == JobStatus.PROCESSING and job.running == 0 and job.pending > 0:
        samples = job.samples or []
        last = samples[-1][0] if samples else (job.started_at or now).timestamp()
        if now.timestamp() - last < QUEUED_SLOW_S:
            return ""  # between two chunks, not waiting
        return "Waiting for a free worker: the rows are queued and start when one is free."
    if job.status == JobStatus.FINALIZING:
        return "Finishing up: the last rows are being written."
    # Only a cancel leaves rows in a request to finish; a failed job's are stopped (the reaper).
    if job.finishing_after_cancel:
        rows = f"{job.running:,} row{'s' if job.running != 1 else ''}"
        return (
            f"{rows} started before it stopped still finish{'es' if job.running == 1 else ''}: "
            "they keep their results, and the counts change as they do."
        )
    return ""


def retry_wait(job: Job, now) -> str:
    """Rows given back to wait for another try: why the last try failed, and when the next is
    due (the soonest the engine set; it may be taken a little later, when a worker is free)."""
    text = f"Rows wait to be tried again: the last try failed ({job.retry_reason.rstrip('.')})."
    if job.retry_at is None:
        return text
    left = (job.retry_at - now).total_seconds()
    if left < 1:
        return text + " The next try is due now."
    return text + f" The next try is due in {charts.duration_text(left)}."
