"""What the web pages, the API and the tasks all call: one implementation of every action.

Errors are raised as batchhub.api.APIError subclasses (they carry the contract's code, status and
details); the HTML views show their message, the API renders them as the error body.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import time
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile, File
from django.db import IntegrityError, connection, transaction
from django.db.models import Count, Exists, F, Max, OuterRef, Q
from django.utils import timezone

from batchhub.api import APIError, Conflict, InvalidCSV, InvalidState, QuotaExceeded, TooManyRows

from . import ingest as ingest_mod
from . import ingest_db, lookup, runner, states, webhooks
from .models import ACTIVE, TERMINAL, Chunk, Job, JobStatus, Row, RowStatus
from .processors import ParamsError, Processor, get_processor_class

logger = logging.getLogger(__name__)

IDEMPOTENCY_WINDOW = timedelta(hours=24)


# --- reading -------------------------------------------------------------------------------------


def jobs_for(user) -> Any:
    return Job.objects.visible().filter(owner=user)


def get_job(user, public_id: str, *, last_event: bool = False) -> Job:
    """The user's job, or 404: another user's job is indistinguishable from a missing one.

    One precompiled query (jobs/lookup.py): it is the read behind every status poll. With
    `last_event`, the job carries `last_event_id` (its newest timeline entry's, 0 if none)."""
    return lookup.get_job(user, public_id, last_event=last_event)


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


def row_index(row_id: str | int) -> int:
    """Row ids are `row_<n>` (1-based, n is the input position); a bare number works too."""
    text = str(row_id)
    number = text[4:] if text.startswith("row_") else text
    if not number.isdigit() or int(number) < 1:
        raise APIError(f"'{row_id}' is not a row id (row ids look like row_12).")
    return int(number) - 1


# --- creating ------------------------------------------------------------------------------------


def processor_for(name: str, params: dict[str, Any] | None) -> Processor:
    cls = get_processor_class(name or "")
    if cls is None:
        raise APIError(
            f"Unknown processor '{name}'.", details={"processor": [f"Unknown processor '{name}'."]}
        )
    try:
        return cls(params or {})
    except ParamsError as exc:
        raise APIError(str(exc), details={"params": exc.errors or [str(exc)]}) from None


def check_column_map(processor: Processor, column_map: dict[str, str] | None) -> dict[str, str]:
    column_map = column_map or {}
    if not isinstance(column_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in column_map.items()
    ):
        raise APIError("column_map must map input names to column names.")
    unknown = [k for k in column_map if k not in processor.inputs]
    if unknown:
        raise APIError(
            f"column_map names '{unknown[0]}', which is not an input of {processor.name} "
            f"(inputs: {', '.join(processor.inputs) or 'none'}).",
            details={"column_map": unknown},
        )
    return column_map


class Source:
    """The input of a job: an uploaded file or a list of row objects, readable more than once."""

    def __init__(self, *, upload: File | None = None, rows: list[dict] | None = None):
        if (upload is None) == (rows is None):
            raise APIError(
                "Send either a file or rows.", details={"file": ["Send either a file or rows."]}
            )
        self.upload = upload
        self.rows = rows
        self.filename = getattr(upload, "name", None) or "rows.jsonl"
        if rows is not None:
            if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
                raise APIError(
                    "rows must be a list of objects.",
                    details={"rows": ["rows must be a list of objects."]},
                )

    def report(self, **kwargs: Any) -> ingest_mod.Report:
        if self.rows is not None:
            return ingest_mod.validate(self.rows, **kwargs)
        fh = self.upload.open("rb") if hasattr(self.upload, "open") else self.upload
        fh.seek(0)
        try:
            return ingest_mod.validate(fh, filename=self.filename, **kwargs)
        finally:
            fh.seek(0)

    def as_file(self) -> tuple[str, File]:
        if self.rows is not None:
            # JSON rows are kept as a JSONL file, so every job is ingested the same way.
            body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rows).encode()
            return "rows.jsonl", ContentFile(body)
        return _safe_filename(self.filename), self.upload

    @property
    def size(self) -> int:
        if self.rows is not None:
            return 0
        return int(getattr(self.upload, "size", 0) or 0)


def _safe_filename(name: str) -> str:
    base = name.replace("\\", "/").rsplit("/", 1)[-1].strip() or "input.csv"
    return "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in base)[:100]


def check_options(
    *,
    concurrency: int | None = None,
    rate_limit: int | None = None,
    max_attempts: int | None = None,
    webhook_url: str | None = None,
) -> None:
    """The job's settings beside its input; validate and create both run these."""
    if concurrency is not None and not 1 <= concurrency <= settings.BATCHHUB_MAX_CONCURRENCY:
        raise APIError(
            f"concurrency must be between 1 and {settings.BATCHHUB_MAX_CONCURRENCY}.",
            details={"concurrency": [f"between 1 and {settings.BATCHHUB_MAX_CONCURRENCY}"]},
        )
    if rate_limit is not None and rate_limit < 1:
        raise APIError(
            "rate_limit must be a positive number of requests per minute.",
            details={"rate_limit": ["≥ 1"]},
        )
    if max_attempts is not None and not 1 <= max_attempts <= 20:
        raise APIError(
            "max_attempts must be between 1 and 20.",
            details={"max_attempts": ["between 1 and 20"]},
        )
    if webhook_url:
        from .ssrf import validate_webhook_url

        try:
            validate_webhook_url(webhook_url)
        except ValidationError as exc:
            raise APIError(exc.messages[0], details={"webhook_url": exc.messages}) from None


def validate_input(
    user,
    *,
    processor: str,
    params: dict[str, Any] | None,
    source: Source,
    id_column: str | None = None,
    column_map: dict[str, str] | None = None,
    concurrency: int | None = None,
    rate_limit: int | None = None,
    max_attempts: int | None = None,
    webhook_url: str | None = None,
) -> tuple[ingest_mod.Report, Processor]:
    """Every check create_job makes on a request but the quotas, without creating anything."""
    check_options(
        concurrency=concurrency,
        rate_limit=rate_limit,
        max_attempts=max_attempts,
        webhook_url=webhook_url,
    )
    proc = processor_for(processor, params)
    try:
        proc.check_destinations()
    except ParamsError as exc:
        raise APIError(str(exc), details={"params": [str(exc)]}) from None
    column_map = check_column_map(proc, column_map)
    report = source.report(
        id_column=id_column or None,
        required_columns=proc.required_columns(column_map),
        max_rows=settings.BATCHHUB_MAX_ROWS,
    )
    return report, proc


QUOTA_RETRY_SECONDS = (5, 60, 3600)  # shortest, when nothing is estimated, longest


def seconds_until_a_job_ends(user) -> int:
    """A Retry-After for the active-jobs quota: when the user's soonest job should finish.

    Only processing jobs have an estimate; a queued or paused one gives no hint, so then a
    minute, and never so long that a client gives up on a quota a cancel frees at once.
    """
    shortest, unknown, longest = QUOTA_RETRY_SECONDS
    now = timezone.now()
    processing = Job.objects.filter(owner=user, status=JobStatus.PROCESSING)
    ends = [job.estimated_completion for job in processing]
    seconds = [(end - now).total_seconds() for end in ends if end is not None]
    if not seconds:
        return unknown
    return int(min(max(min(seconds), shortest), longest))


def request_fingerprint(payload: dict[str, Any], upload: File | None) -> str:
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode())
    if upload is not None:
        fh = upload.open("rb") if hasattr(upload, "open") else upload
        fh.seek(0)
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
        fh.seek(0)
    return digest.hexdigest()


def create_job(
    user,
    *,
    processor: str,
    params: dict[str, Any] | None,
    source: Source,
    name: str = "",
    id_column: str | None = None,
    column_map: dict[str, str] | None = None,
    webhook_url: str | None = None,
    concurrency: int | None = None,
    rate_limit: int | None = None,
    max_attempts: int | None = None,
    idempotency_key: str | None = None,
    actor: str = "",
) -> tuple[Job, bool]:
    """Validate the input and create a queued job whose ingest task starts on commit.

    Returns (job, created); with an Idempotency-Key seen before and the same request, the first
    job and False.
    """
    fingerprint = ""
    if idempotency_key:
        fingerprint = request_fingerprint(
            {
                "processor": processor,
                "params": params,
                "name": name,
                "id_column": id_column,
                "column_map": column_map,
                "webhook_url": webhook_url,
                "concurrency": concurrency,
                "rate_limit": rate_limit,
                "max_attempts": max_attempts,
                "rows": source.rows,
            },
            source.upload,
        )
        earlier = Job.objects.filter(
            owner=user,
            idempotency_key=idempotency_key,
            created_at__gte=timezone.now() - IDEMPOTENCY_WINDOW,
        ).first()
        if earlier is not None:
            if earlier.request_hash != fingerprint:
                raise Conflict(
                    "This Idempotency-Key was used with a different request.",
                    code="idempotency_conflict",
                )
            return earlier, False
        # A key older than the window is free again.
        Job.objects.filter(owner=user, idempotency_key=idempotency_key).update(idempotency_key=None)

    active = Job.objects.filter(owner=user, status__in=ACTIVE).count()
    if active >= settings.BATCHHUB_MAX_ACTIVE_JOBS:
        raise QuotaExceeded(
            f"You have {active} active jobs; the limit is {settings.BATCHHUB_MAX_ACTIVE_JOBS}. "
            "Wait for one to finish or cancel one.",
            retry_after=seconds_until_a_job_ends(user),
            details={"limit": "active_jobs", "max": settings.BATCHHUB_MAX_ACTIVE_JOBS},
        )
    concurrency = concurrency or settings.BATCHHUB_DEFAULT_CONCURRENCY
    report, proc = validate_input(
        user,
        processor=processor,
        params=params,
        source=source,
        id_column=id_column,
        column_map=column_map,
        concurrency=concurrency,
        rate_limit=rate_limit,
        max_attempts=max_attempts,
        webhook_url=webhook_url,
    )
    if report.row_count > settings.BATCHHUB_MAX_ROWS:
        raise TooManyRows(
            f"The input has {report.row_count} rows; "
            f"the limit is {settings.BATCHHUB_MAX_ROWS} rows per job.",
            details={"limit": "rows_per_job", "max": settings.BATCHHUB_MAX_ROWS},
        )
    if not report.valid:
        raise InvalidCSV(report.errors[0]["message"], details={"errors": report.errors})

    job = Job(
        owner=user,
        name=(name or source.filename)[:200],
        processor=proc.name,
        params=proc.params,
        id_column=id_column or report.info.id_column or None,
        column_map=column_map or {},
        columns=report.columns,
        input_format=report.info.format,
        encoding=report.info.encoding or "",
        delimiter=report.info.delimiter or "",
        input_size=source.size,
        webhook_url=webhook_url or None,
        concurrency=concurrency,
        rate_limit=rate_limit,
        max_attempts=max_attempts or settings.BATCHHUB_ROW_MAX_ATTEMPTS,
        idempotency_key=idempotency_key or None,
        request_hash=fingerprint,
    )
    filename, content = source.as_file()
    with transaction.atomic():
        job.save()
        job.input_file.save(filename, content, save=False)
        job.save(update_fields=["input_file"])
        states.record(
            job,
            "created",
            f"Job created from {source.filename} ({report.row_count} rows) with {proc.name}.",
            actor=actor,
        )
        transaction.on_commit(lambda: _enqueue_ingest(job.pk))
    return job, True


def _enqueue_ingest(job_pk: int) -> None:
    from .tasks import ingest_job

    ingest_job.delay(job_pk)


def start_loops(job: Job) -> None:
    from .tasks import work

    for _ in range(runner.plan_for(job).loops):
        work.delay(job.pk)


# --- ingest (task side) --------------------------------------------------------------------------


def ingest(job_pk: int) -> None:
    job = Job.objects.filter(pk=job_pk).first()
    if job is None:
        return
    if job.status == JobStatus.QUEUED:
        try:
            job = states.transition(
                job, JobStatus.VALIDATING, message="Reading and checking the input."
            )
        except states.IllegalTransition:
            return
    elif job.status != JobStatus.VALIDATING:
        return  # already ingested, cancelled or failed: a redelivered task does nothing
    in_batches = connection.vendor == "sqlite"
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
                    info = ingest_mod.write_rows(job, fh, filename=job.input_file.name)
            # Under the job's lock (taken only now: a cancel during the rows must not wait for
            # them): still ours to finish, not cancelled nor finished by another attempt.
            if Job.objects.select_for_update().get(pk=job.pk).status != JobStatus.VALIDATING:
                raise _IngestStopped()
            total = info.rows_written
            required = proc.required_columns(job.column_map or {})
            missing = [c for c in required if c not in info.columns]
            if missing:
                message = f"The input has no column '{missing[0]}', which {proc.name} needs."
                raise ingest_mod.InputError([{"line": 1, "column": None, "message": message}])
            if total > settings.BATCHHUB_MAX_ROWS:
                message = f"The input has more than {settings.BATCHHUB_MAX_ROWS} rows."
                raise ingest_mod.InputError([{"line": None, "column": None, "message": message}])
            job.total = job.pending = total
            job.running = job.succeeded = job.failed = job.cancelled = 0
            job.columns = info.columns
            job.encoding = info.encoding or ""
            job.delimiter = info.delimiter or ""
            job.input_format = info.format
            job.save(update_fields=[*_INGESTED_FIELDS, "updated_at"])
            # The chunks are what loops claim: made here, with the job's status, so no row is
            # worked on before the whole file is in.
            runner.make_chunks(job, runner.plan_for(job))
            if connection.vendor == "postgresql":
                # Fresh statistics for the rows just loaded, so the workers' queries get
                # index plans from their first chunk (autovacuum would catch up only later).
                with connection.cursor() as cursor:
                    cursor.execute(f"ANALYZE {Row._meta.db_table}")
            job = states.transition(
                job,
                JobStatus.PROCESSING,
                message=f"{total} rows read ({_describe(info)}); processing with {proc.name}.",
            )
            transaction.on_commit(lambda: start_loops(job))
    except ingest_mod.InputError as exc:
        _discard_rows(job_pk, in_batches)
        _fail(job_pk, "invalid_csv", str(exc), {"errors": exc.errors})
    except APIError as exc:
        _discard_rows(job_pk, in_batches)
        _fail(job_pk, exc.error_code, str(exc.detail), exc.details)
    except (states.IllegalTransition, _IngestStopped):
        # Cancelled while reading: the rows were rolled back with the transaction, or on
        # SQLite are deleted here, unless another attempt of the ingest is writing them or
        # finished (the job is still validating, or processing).
        stopped = Job.objects.filter(pk=job_pk).values_list("status", flat=True).first()
        if stopped not in (JobStatus.VALIDATING, JobStatus.PROCESSING):
            _discard_rows(job_pk, in_batches)
        return
    except Exception as exc:
        try:
            _discard_rows(job_pk, in_batches)
        except Exception:  # the database itself failing: the job still fails below
            logger.exception("could not delete the rows of job %s's failed ingest", job_pk)
        _fail(
            job_pk, "ingest_error", f"The input could not be read: {exc.__class__.__name__}.", None
        )
        raise


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


def _write_rows_in_batches(job: Job) -> ingest_mod.TableInfo:
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
            return ingest_mod.write_rows(
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
    step = ingest_db.SQLITE_BATCH_ROWS * 4
    for low in range(last - last % step, -1, -step):
        with transaction.atomic():
            rows.filter(index__gte=low).delete()


def _describe(info: ingest_mod.TableInfo) -> str:
    parts = [info.format.upper()]
    if info.encoding:
        parts.append(info.encoding)
    if info.delimiter:
        names = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
        parts.append(names.get(info.delimiter, info.delimiter) + "-separated")
    if info.compressed:
        parts.append("gzip")
    return ", ".join(parts)


def _fail(job_pk: int, code: str, message: str, details: Any) -> None:
    try:
        states.transition(
            job_pk, JobStatus.FAILED, error=(code, message), message=message, data=details
        )
    except states.IllegalTransition:
        pass


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
        transaction.on_commit(lambda: start_loops(job))
    return job


def cancel(job: Job, *, actor: str) -> Job:
    with transaction.atomic():
        job = _guarded(job, JobStatus.CANCELLED, actor=actor, message=f"Cancelled by {actor}.")
        Chunk.objects.filter(job=job, done=False).update(done=True, lease_until=None)
    # The status is committed first, so loops stop at their next sync point; then the pending
    # rows, in short batches that never hold the write lock for the whole job.
    _cancel_pending(job)
    job.refresh_from_db()
    return job


# The cancel request cancels pending rows for at most this long; the rest is done by a task.
CANCEL_SECONDS = 0.5


def _cancel_pending(job: Job) -> None:
    # Rows already running finish and keep their output; the rest will not start. A CPU
    # processor's rows in flight are still `pending` in the table (their chunk records the
    # range instead): they are running, so they are left to finish too. Those ranges are one
    # per loop at most, so they are read first and excluded by index range.
    in_flight = list(
        Chunk.objects.filter(job=job, inflight_start__isnull=False).values_list(
            "inflight_start", "inflight_end"
        )
    )
    began = time.monotonic()
    for start in range(0, job.total, runner.BULK_ROWS):
        if time.monotonic() - began > CANCEL_SECONDS:
            from .tasks import cancel_leftovers

            cancel_leftovers.delay(job.pk)
            return
        rows = Row.objects.filter(
            job=job,
            status=RowStatus.PENDING,
            index__gte=start,
            index__lt=start + runner.BULK_ROWS,
        )
        for lo, hi in in_flight:
            rows = rows.exclude(index__gte=lo, index__lt=hi)
        with transaction.atomic():
            n = rows.update(status=RowStatus.CANCELLED)
            if n:
                Job.objects.filter(pk=job.pk).update(
                    pending=F("pending") - n, cancelled=F("cancelled") + n
                )


def retry(job: Job, *, actor: str, row_ids: list[str] | None = None) -> Job:
    with transaction.atomic():
        locked = Job.objects.select_for_update().get(pk=job.pk)
        if locked.status not in TERMINAL and locked.status != JobStatus.PAUSED:
            raise InvalidState(
                f"Only a finished or paused job can retry rows; this one is {locked.status}.",
                details={"status": locked.status},
            )
        rows = Row.objects.filter(job=locked, status=RowStatus.FAILED)
        if row_ids is not None:
            indexes = [row_index(r) for r in row_ids]
            missing = set(indexes) - set(
                Row.objects.filter(job=locked, index__in=indexes).values_list("index", flat=True)
            )
            if missing:
                raise APIError(
                    f"No row row_{min(missing) + 1} in this job.",
                    details={"rows": [f"row_{i + 1}" for i in sorted(missing)]},
                )
            rows = rows.filter(index__in=indexes)
        n = rows.update(status=RowStatus.PENDING, attempts=0, error=None, output=None)
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
        Chunk.objects.filter(job=locked).filter(Exists(pending_in_chunk)).update(
            done=False, available_at=None, claims=0
        )
        message = f"{actor} retried {n} failed row{'s' if n != 1 else ''}."
        if locked.status == JobStatus.PAUSED:
            states.record(
                locked,
                "retry",
                message + " They run when the job resumes.",
                actor=actor,
                data={"rows": n},
            )
            locked.refresh_from_db()
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
        transaction.on_commit(lambda: start_loops(locked))
    return locked


def rename(job: Job, name: str, *, actor: str) -> Job:
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise APIError(
            "name must be 1 to 200 characters.", details={"name": ["1 to 200 characters"]}
        )
    Job.objects.filter(pk=job.pk).update(name=name, updated_at=timezone.now())
    job.refresh_from_db()
    return job


def revoke_links(job: Job, *, actor: str) -> Job:
    """Every results link of the job handed out so far stops working (links.py signs them with
    the job's link_version)."""
    Job.objects.filter(pk=job.pk).update(link_version=F("link_version") + 1)
    states.record(
        job,
        "links_revoked",
        "Every results link handed out so far was revoked.",
        actor=actor or "system",
    )
    job.refresh_from_db()
    return job


def redeliver_webhook(job: Job, *, actor: str) -> str:
    """Send the finished job's webhook again as a new message; its webhook id."""
    return webhooks.redeliver(job, actor=actor)


def delete(job: Job, *, actor: str) -> None:
    if job.is_active and states.can_transition(job, JobStatus.CANCELLED):
        try:
            cancel(job, actor=actor)
        except InvalidState:
            pass
    from .housekeeping import purge_job

    purge_job(job)


# --- housekeeping --------------------------------------------------------------------------------


def reap(now=None) -> dict[str, int]:
    """Put stalled work back in motion; resume auto-paused jobs whose wait is over."""
    now = now or timezone.now()
    lease = timedelta(seconds=settings.BATCHHUB_LEASE_SECONDS)
    done = {"restarted": 0, "resumed": 0, "reingested": 0, "finalized": 0}

    # A loop commits at least every few seconds (runner.MAX_SYNC_GAP): a job without a commit
    # for STALL_SECONDS whose chunks nobody holds has lost its loops (their messages went with a
    # broker restart, or their worker was killed whole), however long the lease.
    stall = min(lease, timedelta(seconds=runner.STALL_SECONDS))
    stale = Job.objects.filter(status=JobStatus.PROCESSING, updated_at__lt=now - stall)
    for job in stale:
        if runner.needs_loops(job.pk, now):
            states.record(
                job, "recovered", "No progress for a while: work restarted (a worker stopped)."
            )
            Job.objects.filter(pk=job.pk).update(updated_at=now)
            transaction.on_commit(lambda job=job: start_loops(job))
            done["restarted"] += 1
        elif not Chunk.objects.filter(job=job, done=False).exists():
            if runner.finalize(job.pk):
                done["finalized"] += 1

    for job in Job.objects.filter(status=JobStatus.PAUSED, resume_at__lte=now):
        try:
            resume(job, actor="system", event_type="auto_resumed")
            done["resumed"] += 1
        except InvalidState:
            pass

    # A cancelled or failed job never keeps rows pending or running: a loop that died or failed
    # mid-chunk after the cancel, or a cancel cut short, left them; no loop will run them now.
    # Only once no loop has synced for a lease's time (a loop's last group may still finish).
    done["leftovers"] = 0
    leftover = Job.objects.filter(
        Q(pending__gt=0) | Q(running__gt=0),
        status__in=(JobStatus.CANCELLED, JobStatus.FAILED),
        updated_at__lt=now - lease,
    )
    for job in leftover:
        if not Chunk.objects.filter(job=job, lease_until__gte=now).exists():
            done["leftovers"] += runner.cancel_leftovers(job.pk)

    # An ingest whose task was lost (a worker killed while reading) is started again.
    lost = Job.objects.filter(
        Q(status=JobStatus.QUEUED, created_at__lt=now - timedelta(minutes=2))
        | Q(status=JobStatus.VALIDATING, updated_at__lt=now - 5 * lease)
    )
    for job in lost:
        Job.objects.filter(pk=job.pk).update(updated_at=now)
        transaction.on_commit(lambda pk=job.pk: _enqueue_ingest(pk))
        done["reingested"] += 1
    return done


def actor_for(request) -> str:
    user = getattr(request, "user", None)
    name = user.get_username() if user is not None and user.is_authenticated else "anonymous"
    key = getattr(request, "auth", None)
    key_name = getattr(key, "name", None)
    return f"{name} (API key {key_name})" if key_name else name


__all__ = [
    "Source",
    "actor_for",
    "cancel",
    "create_job",
    "delete",
    "get_job",
    "ingest",
    "list_jobs",
    "pause",
    "reap",
    "redeliver_webhook",
    "rename",
    "resume",
    "retry",
    "revoke_links",
    "validate_input",
]
