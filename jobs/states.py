"""The job state machine: the one place a job's status changes.

Web views, API views and tasks all call ``transition``; it locks the job row, refuses a move the
table below does not allow, stamps the timestamps, records a JobEvent and, on a terminal status,
hands the job to the webhook sender.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from . import livestatus, webhook_deliveries
from .models import TERMINAL, Job, JobEvent, JobStatus

S = JobStatus

ALLOWED: dict[str, frozenset[str]] = {
    S.QUEUED: frozenset({S.VALIDATING, S.FAILED, S.CANCELLED}),
    S.VALIDATING: frozenset({S.PROCESSING, S.FAILED, S.CANCELLED}),
    S.PROCESSING: frozenset({S.PAUSED, S.FINALIZING, S.CANCELLED, S.FAILED}),
    S.PAUSED: frozenset({S.PROCESSING, S.CANCELLED, S.FAILED}),
    # Cancelled: a cancelled job's failed rows were retried; the rows the cancel left never ran.
    S.FINALIZING: frozenset({S.COMPLETED, S.PARTIAL, S.FAILED, S.CANCELLED}),
    # Retry sends a finished job with failed rows back to work.
    S.COMPLETED: frozenset(),
    S.PARTIAL: frozenset({S.PROCESSING}),
    S.FAILED: frozenset({S.PROCESSING}),
    S.CANCELLED: frozenset({S.PROCESSING}),
}

# The event type recorded for each target status, when the caller names none.
EVENT_TYPES: dict[str, str] = {
    S.VALIDATING: "validating",
    S.PROCESSING: "processing",
    S.PAUSED: "paused",
    S.FINALIZING: "finalizing",
    S.COMPLETED: "completed",
    S.PARTIAL: "partial",
    S.FAILED: "failed",
    S.CANCELLED: "cancelled",
}


class IllegalTransition(Exception):
    def __init__(self, job: Job, target: str):
        self.job = job
        self.current = job.status
        self.target = target
        super().__init__(f"A {job.status} job cannot become {target}.")


def can_transition(job: Job, target: str) -> bool:
    return target in ALLOWED[job.status]


def record(
    job: Job, type: str, message: str = "", *, actor: str = "system", data: Any = None
) -> JobEvent:
    return JobEvent.objects.create(job=job, type=type, message=message, actor=actor, data=data)


WORKING = frozenset({S.PROCESSING, S.FINALIZING})


def _count_work(job: Job, previous: str, target: str, now) -> None:
    """A stretch of work starts on entering processing, and is added to the job's worked time on
    leaving it for a pause or an end (a job started before this was kept has none to add to)."""
    if job.worked_seconds is None:
        if previous in TERMINAL and target in WORKING and job.started_at and job.finished_at:
            # A job finished before worked time was kept, retried: its span was its work, and
            # from now on the wait before this retry is left out like any other.
            job.worked_seconds = max(0.0, (job.finished_at - job.started_at).total_seconds())
        else:
            return
    if target in WORKING and previous not in WORKING:
        job.working_since = now
    elif previous in WORKING and target not in WORKING and job.working_since is not None:
        job.worked_seconds += max(0.0, (now - job.working_since).total_seconds())
        job.working_since = None


def transition(
    job: Job | int,
    target: str,
    *,
    actor: str = "system",
    message: str = "",
    event_type: str | None = None,
    data: Any = None,
    error: tuple[str, str] | None = None,
    only_from: frozenset[str] | None = None,
    **fields: Any,
) -> Job:
    """Move a job to `target`, or raise IllegalTransition. Returns the fresh, locked-and-saved job.

    Extra keyword fields are set on the job in the same save (e.g. pause_reason, resume_at).
    `only_from` narrows the allowed starting states (resume: only from paused).
    """
    pk = job.pk if isinstance(job, Job) else job
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=pk)
        if target not in ALLOWED[locked.status] or (
            only_from is not None and locked.status not in only_from
        ):
            raise IllegalTransition(locked, target)
        now = timezone.now()
        previous = locked.status
        locked.status = target
        if target == S.PROCESSING and locked.started_at is None:
            locked.started_at = now
            locked.worked_seconds = 0.0
        _count_work(locked, previous, target, now)
        if target in TERMINAL:
            locked.finished_at = now
            locked.expires_at = now + timedelta(days=settings.BATCHHUB_RETENTION_DAYS)
        elif previous in TERMINAL:
            # Back to work after a retry: the job is no longer finished or due to expire.
            locked.finished_at = None
            locked.expires_at = None
        if target != S.PAUSED:
            locked.pause_reason = ""
            locked.resume_at = None
        if error is not None:
            locked.error_code, locked.error_message = error
        for name, value in fields.items():
            setattr(locked, name, value)
        locked.save()
        event = record(locked, event_type or EVENT_TYPES[target], message, actor=actor, data=data)
        livestatus.publish(locked, event.pk)
        if target in TERMINAL:
            webhook_deliveries.on_terminal(locked)
    return locked
