"""The trace a job's loop steps leave on the job, and what the reaper reads from it.

A loop's next step is a broker message (jobs.tasks.work) until a worker takes it. A job whose
steps wait their turn behind other jobs' and a job whose steps were lost (a worker killed whole
with the messages it had taken, a broker restarted without its messages) look alike in the
database: no chunk held, nothing committed. The queue's order tells them apart. The job keeps
when its newest step was queued and when one last started; the reaper's own message
(jobs.reap, in the same queue) says when it was queued. Once that message runs, every step
queued before it has left the queue: a job none of whose steps started since, and none holding
a chunk, has lost them. A broker that says nothing waits tells the same of every step queued
before it was asked.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from functools import cache

from django.db import DatabaseError, connection, transaction
from django.db.models import DateTimeField, DurationField, F, Q, Value
from django.db.models.expressions import RawSQL
from django.db.models.functions import Coalesce, Greatest, Now

from batchhub.celery import SENT_HEADER

from . import enqueue
from .models import Job, JobStatus

logger = logging.getLogger(__name__)

# Messages queued this close together may leave the queue in either order (several senders,
# each writing its time just around its send): a step counts as gone once one queued this much
# later ran. One clock, the database's, stamps them all.
ORDER_SLACK = timedelta(seconds=2)


# A step that ends queues the job's next step moments after its last sync point: each sync point
# counts the next step as queued up to this long after it (`queued_soon`), and a step that
# queued it within that writes nothing more (jobs/tasks.py). Short of the stall, so that a job
# whose loops were lost is restarted no later for it.
QUEUED_WITHIN = 1.0


def queued_soon() -> RawSQL:
    """The job's step_queued_at as a sync point writes it: its step's next one, if it ends now,
    will have been queued by QUEUED_WITHIN from now (the database's clock)."""
    return _queued_soon(connection.vendor)


@cache
def _queued_soon(vendor: str) -> RawSQL:
    # Written out once: Django's expressions for it cost a sync point more to build than the
    # statement they would spare (a datetime plus a duration, on SQLite a function of Django's).
    column = connection.ops.quote_name("step_queued_at")
    if vendor == "postgresql":
        due = f"STATEMENT_TIMESTAMP() + INTERVAL '{QUEUED_WITHIN} seconds'"
        sql = f"GREATEST(COALESCE({column}, {due}), {due})"
    else:  # SQLite: text as Now() writes it (MAX of two values is SQLite's GREATEST)
        due = f"STRFTIME('%%Y-%%m-%%d %%H:%%M:%%f', 'NOW', '+{QUEUED_WITHIN} seconds')"
        sql = f"MAX(COALESCE({column}, {due}), {due})"
    return RawSQL(sql, (), output_field=DateTimeField())


def queued(job_pk: int, delay: float = 0.0) -> None:
    """A step of the job was just queued, to start after `delay` seconds."""
    # The database's clock, as every time the reaper compares with this one (batchhub/dbclock).
    due = Now() + Value(timedelta(seconds=delay), output_field=DurationField()) if delay else Now()
    try:
        # The latest due time stands: a delayed step queued before a plain one comes later.
        Job.objects.filter(pk=job_pk).update(
            step_queued_at=Greatest(Coalesce("step_queued_at", due), due)
        )
    except DatabaseError as exc:
        # The step is queued: without the record the reaper may restart the job's loops once
        # the step looks overdue, and the step then stops (it belongs to an earlier start).
        logger.warning("job %s: step queued but not recorded (%s)", job_pk, exc)


def start(job_pk: int) -> Job | None:
    """A step of the job starts: the job as it is now (None for a job gone), its start stamped
    by the same statement. The stamp comes with the read of which start of the loops the step
    belongs to, so that the reaper's restart (take_for_lost) and this step never both go on:
    either the restart came first and the step reads the new count, or the stamp did and the
    restart finds the job's step started."""
    now_sql, now_params = Job.objects.all().query.get_compiler(connection=connection).compile(Now())
    quote = connection.ops.quote_name
    columns = ", ".join(quote(field.column) for field in Job._meta.concrete_fields)
    # UPDATE … RETURNING (PostgreSQL, SQLite 3.35+): one statement where a stamp and a read
    # were two, on every step.
    found = list(
        Job.objects.raw(
            f"UPDATE {quote(Job._meta.db_table)} SET {quote('step_started_at')} = {now_sql} "
            f"WHERE {quote(Job._meta.pk.column)} = %s RETURNING {columns}",
            [*now_params, job_pk],
        )
    )
    return found[0] if found else None


def sent_at(request) -> datetime | None:
    """When the message of a running task was sent (the database's time), if it says."""
    stamp = request.get(SENT_HEADER) if request is not None else None
    if not isinstance(stamp, int | float):
        return None
    return datetime.fromtimestamp(stamp, tz=UTC)


def left_queue_before(now: datetime, probe: datetime | None, lease: timedelta) -> datetime:
    """A time before which every step queued has left the queue (taken by a worker, or lost):
    the reaper's message was sent at `probe` and has run; or nothing waits in the queues now.
    `now` and `probe` are the database's times, as the steps' are."""
    times = [min(probe, now)] if probe is not None else []
    # Only the broker's own 0: one that cannot say (a blip) may still hold the steps.
    if enqueue.queue_length() == 0:
        times.append(now)
    if not times:
        # No message of the reaper's says (sent by an older beat, or by one that could not
        # reach the database), and the queue may hold the steps: the rule before steps were
        # traced, a lease without one starting. A dead worker's job is restarted after all.
        return now - lease
    return max(times) - ORDER_SLACK


def take_for_lost(
    job_pk: int, *, now: datetime, stall: timedelta, left_before: datetime
) -> int | None:
    """Take the job's loops for lost, and start them afresh (their count bumped), if nothing
    committed and no step started for `stall`, and its newest step was queued (due) before
    `left_before`. One statement: a step starting meanwhile keeps the job as it is.

    Returns the new start's count (None when the job is left alone), read under the same lock:
    a resume or retry starting the loops meanwhile gets a count of its own."""
    with transaction.atomic():
        taken = _lost(job_pk, now, stall, left_before).update(
            **new_start(), step_queued_at=now, updated_at=now
        )
        return generation(job_pk) if taken else None


def looks_lost(job_pk: int, *, now: datetime, stall: timedelta, left_before: datetime) -> bool:
    """Whether take_for_lost would take the job now (read only)."""
    return _lost(job_pk, now, stall, left_before).exists()


def _lost(job_pk: int, now: datetime, stall: timedelta, left_before: datetime):
    return (
        Job.objects.filter(pk=job_pk, status=JobStatus.PROCESSING, updated_at__lt=now - stall)
        .filter(Q(step_started_at__isnull=True) | Q(step_started_at__lt=now - stall))
        .filter(Q(step_queued_at__isnull=True) | Q(step_queued_at__lt=left_before))
    )


def new_start() -> dict:
    """What starting a job's loops afresh writes on the job: its count of starts bumped (a step
    of an earlier start stops), none of the new start's loops idle yet."""
    return {"loop_generation": F("loop_generation") + 1, "idle_loops": 0}


def generation(job_pk: int) -> int | None:
    """The count of the job's current start (None for a job gone)."""
    return Job.objects.filter(pk=job_pk).values_list("loop_generation", flat=True).first()
