"""A job's ingest on a worker: its input read into rows, its chunks made, processing started.

On PostgreSQL the whole file is one transaction; on SQLite the rows are committed in batches
(so other writers get the lock in between) and a failed or cancelled ingest deletes them.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Max
from django.utils import timezone

from batchhub.api import APIError

from .. import chunks, holders, livestatus, states
from ..models import INPUT_ROWS, Chunk, Job, JobEvent, JobStatus, Row
from ..processor_setup import processor_for
from .db import SQLITE_BATCH_ROWS, write_rows
from .detect import InputError, TableInfo

logger = logging.getLogger(__name__)


HOLDER = "ingest_holder"  # the key of a reading event's data naming its process


def reader_gone(job: Job) -> bool:
    """Whether the process that last started reading the job's input has exited (only known for
    one on this machine)."""
    event = JobEvent.objects.filter(job=job, data__has_key=HOLDER).order_by("-at", "-id").first()
    return event is not None and holders.is_gone(event.data[HOLDER])


def ingest(job_pk: int) -> int | None:
    """Read the job's input and start its loops. Returns the start count of a loop left for the
    caller to run at once (chunks.start_loops), else None."""
    job = Job.objects.filter(pk=job_pk).first()
    if job is None:
        return
    # Who reads the input, in its event: the reaper starts again at once an ingest whose process
    # is gone (jobs/holders.py), rather than after the long wait it gives one on another machine.
    reader = {HOLDER: holders.current()}
    if job.status == JobStatus.QUEUED:
        try:
            job = states.transition(
                job, JobStatus.VALIDATING, message="Reading and checking the input.", data=reader
            )
        except states.IllegalTransition:
            return
    elif job.status == JobStatus.VALIDATING:
        states.record(job, "ingest_restarted", "Reading the input again.", data=reader)
    else:
        return  # already ingested, cancelled or failed: a redelivered task does nothing
    in_batches = connection.vendor == "sqlite"
    heads: list[int | None] = []
    try:
        proc = processor_for(job.processor, job.params)
        if in_batches:
            info = _write_rows_in_batches(job)
        with transaction.atomic():
            if not in_batches:
                # One transaction for the whole file: a failed ingest leaves nothing.
                Chunk.objects.filter(job=job).delete()
                Row.objects.filter(job=job).delete()
                with job.input_file.open("rb") as fh:
                    info = write_rows(job, fh, filename=job.input_file.name)
            # Under the job's lock (taken only now: a cancel during the rows must not wait for
            # them): still ours to finish, not cancelled nor finished by another attempt.
            if Job.objects.select_for_update().get(pk=job.pk).status != JobStatus.VALIDATING:
                raise _IngestStopped()
            total = info.rows_written
            required = proc.required_columns(job.column_map or {})
            missing = [c for c in required if c not in info.columns]
            if missing:
                message = f"The input has no column '{missing[0]}', which {proc.name} needs."
                raise InputError([{"line": 1, "column": None, "message": message}])
            if total > settings.BATCHHUB_MAX_ROWS:
                message = f"The input has more than {settings.BATCHHUB_MAX_ROWS:,} rows."
                raise InputError([{"line": None, "column": None, "message": message}])
            job.total = job.pending = total
            job.running = job.succeeded = job.failed = job.cancelled = 0
            job.columns = info.columns
            # Rows sent as JSON were stored as a JSONL file of ours: they stay JSON rows.
            if job.input_format != INPUT_ROWS:
                job.encoding = info.encoding or ""
                job.delimiter = info.delimiter or ""
                job.input_format = info.format
            job.save(update_fields=[*_INGESTED_FIELDS, "updated_at"])
            livestatus.publish(job)
            # The chunks are what loops claim: made here, with the job's status, so no row is
            # worked on before the whole file is in.
            chunks.make_chunks(job, chunks.plan_for(job))
            if connection.vendor == "postgresql":
                # Fresh statistics for the rows just loaded, so the workers' queries get
                # index plans from their first chunk (autovacuum would catch up only later).
                # A tenth of the default sample gives them the same plans, for a tenth of
                # the cost (a large part of the ingest's time with the default).
                with connection.cursor() as cursor:
                    cursor.execute("SET LOCAL default_statistics_target = 10")
                    cursor.execute(f"ANALYZE {Row._meta.db_table}")
            job = states.transition(
                job,
                JobStatus.PROCESSING,
                message=f"{total:,} rows read ({_describe(job, info)}); "
                f"processing with {proc.name}.",
            )
            transaction.on_commit(lambda: heads.append(chunks.start_loops(job, first=True)))
    except InputError as exc:
        _fail(job_pk, in_batches, "invalid_csv", str(exc), {"errors": exc.errors})
    except APIError as exc:
        _fail(job_pk, in_batches, exc.error_code, str(exc.detail), exc.details)
    except (states.IllegalTransition, _IngestStopped):
        # Cancelled while reading: the rows were rolled back with the transaction, or on
        # SQLite are deleted here, unless another attempt of the ingest is writing them or
        # finished (the job is still validating, or processing).
        stopped = Job.objects.filter(pk=job_pk).values_list("status", flat=True).first()
        if stopped not in (JobStatus.VALIDATING, JobStatus.PROCESSING):
            _discard_rows(job_pk, in_batches)
        return
    except Exception as exc:
        message = f"The input could not be read: {exc.__class__.__name__}."
        if not _fail(job_pk, in_batches, "ingest_error", message, None):
            # Another attempt of this ingest finished it first (this one then met its rows):
            # the job goes on with them.
            logger.warning("job %s: a second attempt of its ingest stopped (%r)", job_pk, exc)
            return None
        raise
    return heads[0] if heads else None


_INGESTED_FIELDS = (
    "total",
    "pending",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "columns",
    "encoding",
    "delimiter",
    "input_format",
)


class _IngestStopped(Exception):
    """The job left `validating` (cancelled, failed, deleted) while its rows were being written."""


def _write_rows_in_batches(job: Job) -> TableInfo:
    """SQLite: the rows in batches, each committed, so other writers get the lock in between.

    Batches commit in input order, so an attempt that stopped (a worker killed mid-file) left
    rows 0 … n-1 exactly: a new attempt reads the whole file again and writes from row n on,
    and every row is in the table once (the unique (job, index) index would refuse a second).
    """
    Chunk.objects.filter(job=job).delete()
    rows = Row.objects.filter(job=job)
    # One statement, so one snapshot even while another attempt of this ingest commits.
    written = rows.aggregate(last=Max("index"), n=Count("index"))
    skip = 0 if written["last"] is None else written["last"] + 1
    if skip != written["n"]:  # not a prefix: not written by this code; start over
        _discard_rows(job.pk, True)
        skip = 0

    def each_batch() -> None:
        # In the batch's transaction: stop if the job was cancelled meanwhile, and show the
        # reaper this ingest is alive (it starts again one that has not moved for a while).
        alive = Job.objects.filter(pk=job.pk, status=JobStatus.VALIDATING).update(
            updated_at=timezone.now()
        )
        if not alive:
            raise _IngestStopped()

    try:
        with job.input_file.open("rb") as fh:
            return write_rows(
                job, fh, filename=job.input_file.name, skip=skip, each_batch=each_batch
            )
    except (IntegrityError, sqlite3.IntegrityError) as exc:
        # A row of this batch is there already: another attempt of this ingest (a redelivered
        # task beside the reaper's) wrote it. That one goes on; this one stops.
        logger.warning("job %s: another ingest attempt is writing its rows (%s)", job.pk, exc)
        raise _IngestStopped() from exc


def _discard_rows(job_pk: int, in_batches: bool) -> None:
    """Delete the rows a failed or cancelled SQLite ingest committed, from the last one down,
    in batches (each a short transaction), so what is left is always a prefix to resume from.
    """
    if not in_batches:
        return  # rolled back with the ingest's transaction
    rows = Row.objects.filter(job_id=job_pk)
    last = rows.aggregate(last=Max("index"))["last"]
    if last is None:
        return
    step = SQLITE_BATCH_ROWS * 4
    for low in range(last - last % step, -1, -step):
        with transaction.atomic():
            rows.filter(index__gte=low).delete()


def _describe(job: Job, info: TableInfo) -> str:
    if job.input_format == INPUT_ROWS:
        return "sent to the API as JSON"
    parts = [info.format.upper()]
    if info.encoding:
        parts.append(info.encoding)
    if info.delimiter:
        names = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
        parts.append(names.get(info.delimiter, info.delimiter) + "-separated")
    if info.compressed:
        parts.append("gzip")
    return ", ".join(parts)


def _fail(job_pk: int, in_batches: bool, code: str, message: str, details: Any) -> bool:
    """Fail the job if it is still being read, then drop its rows; whether it was failed.

    A job another attempt of this ingest has read meanwhile (now processing), or cancelled,
    keeps its status and its rows.
    """
    try:
        states.transition(
            job_pk,
            JobStatus.FAILED,
            error=(code, message),
            message=message,
            data=details,
            only_from=frozenset({JobStatus.VALIDATING}),
        )
    except states.IllegalTransition:
        return False
    try:
        _discard_rows(job_pk, in_batches)
    except Exception:  # the database itself failing: housekeeping deletes them with the job
        logger.exception("could not delete the rows of job %s's failed ingest", job_pk)
    return True
