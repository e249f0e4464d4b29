"""What the web pages and the API call: one implementation of every job action.

Creating a job is in jobs/creation.py; the workers' side is
jobs/ingest/loading.py, jobs/runner.py and jobs/reaper.py.

Errors are raised as batchhub.api.APIError subclasses (they carry the contract's code, status and
details); the HTML views show their message, the API renders them as the error body.
"""

from __future__ import annotations

import time
from typing import Any

from django.db import transaction
from django.db.models import Exists, F, OuterRef
from django.utils import timezone

from batchhub.api import APIError, InvalidState

from . import chunks, enqueue, finish, livestatus, lookup, states, webhook_deliveries
from .housekeeping import purge_job
from .models import ACTIVE, TERMINAL, Chunk, Job, JobStatus, Row, RowStatus
from .processors import ParamsError, get_processor_class

# --- reading -------------------------------------------------------------------------------------


def jobs_for(user) -> Any:
    return Job.objects.visible().filter(owner=user)


def get_job(user, public_id: str, *, last_event: bool = False) -> Job:
    """The user's job, or 404: another user's job is indistinguishable from a missing one.

    One precompiled query (jobs/lookup.py): it is the read behind every status poll. With
    `last_event`, the job carries `last_event_id` (its newest timeline entry's, 0 if none)."""
    return lookup.get_job(user, public_id, last_event=last_event)


def job_status(user, public_id: str, stored: Any = livestatus.READ) -> Job:
    """The job for a status poll: as last published to the cache (jobs/livestatus.py), else
    from the database like get_job (which decides the 404). Carries `last_event_id`.

    `stored`: the job's key as the poll already read it (jobs/poll.py)."""
    return livestatus.read(user, public_id, stored) or get_job(user, public_id, last_event=True)


def list_jobs(user, *, status: str | None = None, processor: str | None = None):
    qs = jobs_for(user)
    if status == "active":
        qs = qs.filter(status__in=ACTIVE)
    elif status:
        if status not in JobStatus.values:
            raise APIError(
                f"Unknown status '{status}'.",
                details={"status": sorted([*JobStatus.values, "active"])},
            )
        qs = qs.filter(status=status)
    if processor:
        qs = qs.filter(processor=processor)
    return qs


ROW_INDEX_MAX = 2**31 - 1  # Row.index is a 32-bit integer on PostgreSQL


def row_index(row_id: str | int) -> int:
    """Row ids are `row_<n>` (1-based, n is the input position); a bare number works too."""
    text = str(row_id)
    number = text[4:] if text.startswith("row_") else text
    # ASCII only: str.isdigit() also takes "²", which int() then refuses (a 500).
    if not (number.isascii() and number.isdigit()) or int(number) < 1:
        raise APIError(
            f"'{row_id}' is not a row: name a row by its number, as row objects give it "
            "(12), or as row_12."
        )
    return int(number) - 1


# --- controls ------------------------------------------------------------------------------------


def _guarded(job: Job, target: str, **kwargs: Any) -> Job:
    try:
        return states.transition(job, target, **kwargs)
    except states.IllegalTransition as exc:
        raise InvalidState(
            f"A {exc.current} job cannot be {_verb(target)}.",
            details={"status": exc.current},
        ) from None


def _verb(target: str) -> str:
    return {
        JobStatus.PAUSED: "paused",
        JobStatus.PROCESSING: "resumed",
        JobStatus.CANCELLED: "cancelled",
    }.get(target, f"moved to {target}")


def pause(job: Job, *, actor: str) -> Job:
    return _guarded(
        job,
        JobStatus.PAUSED,
        actor=actor,
        message=f"Paused by {actor}.",
        pause_reason=f"Paused by {actor}.",
    )


def resume(job: Job, *, actor: str, event_type: str = "resumed") -> Job:
    with transaction.atomic():
        # processing is reachable from finished states too, but only through retry.
        job = _guarded(
            job,
            JobStatus.PROCESSING,
            actor=actor,
            event_type=event_type,
            message=f"Resumed by {actor}.",
            throttle_streak=0,
            only_from=frozenset({JobStatus.PAUSED}),
        )
        transaction.on_commit(lambda: chunks.start_loops(job))
    return job


def cancel(job: Job, *, actor: str) -> Job:
    with transaction.atomic():
        job = _guarded(job, JobStatus.CANCELLED, actor=actor, message=f"Cancelled by {actor}.")
        Chunk.objects.filter(job=job, done=False).update(done=True, lease_until=None)
    # The status is committed first, so loops stop at their next sync point; then the pending
    # rows, in short batches that never hold the write lock for the whole job.
    _cancel_pending(job)
    job.refresh_from_db()
    livestatus.publish(job, livestatus.NO_NEW_EVENT)
    return job


# The cancel request cancels pending rows for at most this long; the rest is done by a task.
CANCEL_SECONDS = 0.5


def cancel_rest(job_pk: int) -> None:
    """The pending rows a cancel request left for lack of time (the task it sent), in the same
    way: its loops may still be running. A count of the rows here would take theirs in flight
    as pending, and cancelling those would let a result land on a cancelled row: the job's
    counts stopped adding up. A dead loop's rows are the reaper's (finish.cancel_leftovers)."""
    job = Job.objects.filter(pk=job_pk, status=JobStatus.CANCELLED).first()
    if job is None:
        return  # deleted, or retried since
    _cancel_pending(job, limited=False)
    job.refresh_from_db()
    livestatus.publish(job, livestatus.NO_NEW_EVENT)


def _cancel_pending(job: Job, *, limited: bool = True) -> None:
    # Rows already running finish and keep their output (a row in a request is written by its
    # own thread when the answer comes back: chunk_loop._Handover); the rest will not start. A CPU
    # processor's rows in flight are still `pending` in the table (their chunk records the
    # range instead): they are running, so they are left to finish too. Those ranges are one
    # per loop at most, so they are read first and excluded by index range.
    in_flight = list(
        Chunk.objects.filter(job=job, inflight_start__isnull=False).values_list(
            "inflight_start", "inflight_end"
        )
    )
    began = time.monotonic()
    for start in range(0, job.total, finish.BULK_ROWS):
        if limited and time.monotonic() - began > CANCEL_SECONDS:
            enqueue.send("jobs.cancel_leftovers", job.pk)
            return
        rows = Row.objects.filter(
            job=job,
            status=RowStatus.PENDING,
            index__gte=start,
            index__lt=start + finish.BULK_ROWS,
        )
        for lo, hi in in_flight:
            rows = rows.exclude(index__gte=lo, index__lt=hi)
        with transaction.atomic():
            n = rows.update(status=RowStatus.CANCELLED)
            if n:
                Job.objects.filter(pk=job.pk).update(
                    pending=F("pending") - n, cancelled=F("cancelled") + n
                )


def _check_params_still_accepted(job: Job) -> None:
    """Rows retried under params the workers refuse would fail the job again at once, their
    errors replaced by "cancelled": say so instead of doing it."""
    processor_cls = get_processor_class(job.processor)
    if processor_cls is None:
        return  # the workers fail the job saying the processor is missing, as before
    try:
        processor_cls.validate_params(dict(job.params or {}))
    except ParamsError as exc:
        raise InvalidState(
            f"The workers refuse this job's params ({exc}); retrying cannot help. "
            "Run it again with other settings.",
            details={"params": [str(exc)]},
        ) from None


def retry(job: Job, *, actor: str, row_ids: list[str] | None = None) -> Job:
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        if locked.status not in TERMINAL and locked.status != JobStatus.PAUSED:
            raise InvalidState(
                f"Only a finished or paused job can retry rows; this one is {locked.status}.",
                details={"status": locked.status},
            )
        if locked.finishing_after_cancel:
            # Rows in a request at the cancel are written by their threads as their answers come
            # back (chunk_loop._Handover), their chunk held until then: a retry meanwhile would
            # let the job end with them still running, or run them a second time.
            raise InvalidState(
                f"{locked.running:,} row{'s' if locked.running != 1 else ''} started before the "
                "cancel still finish; retry once they are done.",
                details={"status": locked.status, "running": locked.running},
            )
        _check_params_still_accepted(locked)
        rows = Row.objects.filter(job=locked, status=RowStatus.FAILED)
        if row_ids is not None:
            indexes = [row_index(r) for r in row_ids]
            # A number past what a row's index column holds is no row; SQLite would raise
            # OverflowError on one past 64 bits (a 500).
            storable = [i for i in indexes if i <= ROW_INDEX_MAX]
            missing = set(indexes) - set(
                Row.objects.filter(job=locked, index__in=storable).values_list("index", flat=True)
            )
            if missing:
                raise APIError(
                    f"No row row_{min(missing) + 1} in this job.",
                    details={"rows": [f"row_{i + 1}" for i in sorted(missing)]},
                )
            rows = rows.filter(index__in=indexes)
        n = rows.update(status=RowStatus.PENDING, attempts=0, error=None, reason=None, output=None)
        if not n:
            raise InvalidState(
                "There are no failed rows to retry.", details={"status": locked.status}
            )
        Job.objects.filter(pk=locked.pk).update(
            failed=locked.failed - n, pending=locked.pending + n
        )
        pending_in_chunk = Row.objects.filter(
            job=locked,
            status=RowStatus.PENDING,
            index__gte=OuterRef("start"),
            index__lt=OuterRef("end"),
        )
        reopen = {"done": False, "available_at": None, "claims": 0}
        if locked.status == JobStatus.CANCELLED:
            # The lease kept for rows in a request at the cancel outlives them (none is left,
            # checked above): kept, no loop could claim these rows until it ran out.
            reopen |= {"lease_until": None, "holder": ""}
        Chunk.objects.filter(job=locked).filter(Exists(pending_in_chunk)).update(**reopen)
        message = f"{actor} retried {n:,} failed row{'s' if n != 1 else ''}."
        if locked.status == JobStatus.PAUSED:
            event = states.record(
                locked,
                "retry",
                message + " They run when the job resumes.",
                actor=actor,
                data={"rows": n},
            )
            locked.refresh_from_db()
            livestatus.publish(locked, event.pk)
            return locked
        locked = states.transition(
            locked.pk,
            JobStatus.PROCESSING,
            actor=actor,
            event_type="retry",
            message=message,
            data={"rows": n},
            error=("", ""),
        )
        transaction.on_commit(lambda: chunks.start_loops(locked))
    return locked


def rename(job: Job, name: str, *, actor: str) -> Job:
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise APIError(
            "name must be 1 to 200 characters.", details={"name": ["1 to 200 characters"]}
        )
    Job.objects.filter(pk=job.pk).update(name=name, updated_at=timezone.now())
    job.refresh_from_db()
    livestatus.publish(job, livestatus.NO_NEW_EVENT)
    return job


def revoke_links(job: Job, *, actor: str) -> Job:
    """Every results link of the job handed out so far stops working (links.py signs them with
    the job's link_version)."""
    Job.objects.filter(pk=job.pk).update(
        link_version=F("link_version") + 1, updated_at=timezone.now()
    )
    event = states.record(
        job,
        "links_revoked",
        "Every results link handed out so far was revoked.",
        actor=actor or "system",
    )
    job.refresh_from_db()
    livestatus.publish(job, event.pk)
    return job


def redeliver_webhook(job: Job, *, actor: str) -> str:
    """Send the finished job's webhook again as a new message; its webhook id."""
    return webhook_deliveries.redeliver(job, actor=actor)


def delete(job: Job, *, actor: str) -> None:
    if job.is_active and states.can_transition(job, JobStatus.CANCELLED):
        try:
            cancel(job, actor=actor)
        except InvalidState:
            pass
    livestatus.forget(job)
    purge_job(job)


def actor_for(request) -> str:
    user = getattr(request, "user", None)
    name = user.get_username() if user is not None and user.is_authenticated else "anonymous"
    key = getattr(request, "auth", None)
    key_name = getattr(key, "name", None)
    return f"{name} (API key {key_name})" if key_name else name


__all__ = [
    "actor_for",
    "cancel",
    "delete",
    "get_job",
    "job_status",
    "list_jobs",
    "pause",
    "redeliver_webhook",
    "rename",
    "resume",
    "retry",
    "revoke_links",
]
