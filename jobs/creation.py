"""A new job: its input and options checked, the quota, idempotent creation, the ingest queued.

Called through jobs/services.py (Source, create_job, validate_input), the one path of every
job action.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.core.files.base import File
from django.db import IntegrityError, transaction
from django.utils import timezone

from batchhub.api import APIError, Conflict, InvalidCSV, QuotaExceeded, TooManyRows
from batchhub.jsonstream import JSONLines

from . import credentials, enqueue, states
from . import ingest as ingest_mod
from .ingest.read import max_line_bytes
from .models import ACTIVE, MAX_RATE_LIMIT, Job, JobStatus
from .processor_setup import check_column_map, processor_for
from .processors import ParamsError, Processor
from .ssrf import validate_webhook_url
from .upload import decompressed_too_large, too_large

IDEMPOTENCY_WINDOW = timedelta(hours=24)
# Rows sent as JSON become a JSONL file: kept in memory while small, on disk past this.
ROWS_SPOOL_BYTES = 1024 * 1024
ROWS_PER_WRITE = 1000


def _refuse_a_row_too_long(rows: JSONLines) -> None:
    # Stored as a line of JSONL, a row longer than a line may be would fail only at ingest.
    size, index = rows.longest
    limit = max_line_bytes()
    if size > limit:
        message = (
            f"rows[{index}] is {size:,} bytes of JSON, longer than the {limit:,} bytes a row "
            "can take."
        )
        raise APIError(message, details={"rows": {index: [message]}})


class Source:
    """The input of a job: an uploaded file or a list of row objects, readable more than once."""

    def __init__(self, *, upload: File | None = None, rows: list[dict] | JSONLines | None = None):
        if (upload is None) == (rows is None):
            raise APIError(
                "Send either a file or rows.", details={"file": ["Send either a file or rows."]}
            )
        self.upload = upload
        self.rows = rows
        self.filename = getattr(upload, "name", None) or "rows.jsonl"
        if rows is None:
            return
        if isinstance(rows, JSONLines):
            objects = not rows.not_objects
        else:
            objects = isinstance(rows, list) and all(isinstance(r, dict) for r in rows)
        if not objects:
            raise APIError(
                "rows must be a list of objects.",
                details={"rows": ["rows must be a list of objects."]},
            )
        if isinstance(rows, JSONLines):
            _refuse_a_row_too_long(rows)

    def report(self, **kwargs: Any) -> ingest_mod.Report:
        """The input read and checked; FileTooLarge (413) when its text is over the limit."""
        if self.rows is not None:
            return ingest_mod.validate(self.rows, **kwargs)
        fh = self.upload.open("rb") if hasattr(self.upload, "open") else self.upload
        fh.seek(0)
        try:
            report = ingest_mod.validate(fh, filename=self.filename, **kwargs)
        finally:
            fh.seek(0)
        stop = report.stopped_by
        if stop is not None and stop.kind == "bytes":
            # Too big, not broken: the answer an upload over the size limit gets.
            raise decompressed_too_large(stop.limit) if stop.compressed else too_large(stop.limit)
        return report

    def as_file(self) -> tuple[str, File]:
        if isinstance(self.rows, JSONLines):
            # Already a file of JSON lines, one a row, as the body was read.
            return "rows.jsonl", File(self.rows.open(), name="rows.jsonl")
        if self.rows is not None:
            # JSON rows are kept as a JSONL file, so every job is ingested the same way; written
            # a slice at a time, never as one string of the whole table beside its rows.
            spool = tempfile.SpooledTemporaryFile(max_size=ROWS_SPOOL_BYTES)
            for start in range(0, len(self.rows), ROWS_PER_WRITE):
                piece = self.rows[start : start + ROWS_PER_WRITE]
                spool.write(
                    "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in piece).encode()
                )
            spool.seek(0)
            return "rows.jsonl", File(spool, name="rows.jsonl")
        return _safe_filename(self.filename), self.upload

    @property
    def described(self) -> str:
        """Where the rows came from, for the timeline: the file's name, or the JSON body's rows
        (their JSONL file is ours, not a file the user sent)."""
        return "JSON rows sent to the API" if self.rows is not None else self.filename

    @property
    def size(self) -> int:
        if self.rows is not None:
            return 0
        return int(getattr(self.upload, "size", 0) or 0)


def _too_many_rows(count: int, stopped: bool = False) -> TooManyRows:
    counted = f"more than {count - 1:,}" if stopped else f"{count:,}"
    return TooManyRows(
        f"The input has {counted} rows; the limit is {settings.BATCHHUB_MAX_ROWS:,} rows per job.",
        details={"limit": "rows_per_job", "max": settings.BATCHHUB_MAX_ROWS},
    )


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
    if rate_limit is not None and not 1 <= rate_limit <= MAX_RATE_LIMIT:
        raise APIError(
            f"rate_limit must be between 1 and {MAX_RATE_LIMIT} requests per minute.",
            details={"rate_limit": [f"between 1 and {MAX_RATE_LIMIT}"]},
        )
    if max_attempts is not None and not 1 <= max_attempts <= 20:
        raise APIError(
            "max_attempts must be between 1 and 20.",
            details={"max_attempts": ["between 1 and 20"]},
        )
    if webhook_url:
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
    check_credentials(user, proc)
    column_map = check_column_map(proc, column_map)
    report = source.report(
        id_column=id_column or None,
        required_columns=proc.required_columns(column_map),
        max_rows=settings.BATCHHUB_MAX_ROWS,
    )
    return report, proc


def check_credentials(user, proc: Processor) -> None:
    """Refuse params naming a saved credential the user has not got (or cannot use), as a
    param error: found at once, not when every row has failed."""
    problems = credentials.unusable(getattr(user, "pk", None), proc.credential_refs())
    if problems:
        first = problems[0]
        raise APIError(f"params.{first['param']}: {first['message']}", details={"params": problems})


QUOTA_RETRY_SECONDS = (5, 60, 3600)  # shortest, when nothing is estimated, longest


def seconds_until_a_job_ends(user) -> int:
    """A Retry-After for the active-jobs quota: when the user's soonest job should finish.

    A job on its way with no estimate yet (queued, being read, just started, finalizing) may
    end at any moment: a small one ends within a second, so the shortest wait; a script told a
    minute made ten small jobs a minute. Paused jobs alone give no hint: a minute. Never so
    long that a client gives up on a quota a cancel frees at once.
    """
    shortest, unknown, longest = QUOTA_RETRY_SECONDS
    now = timezone.now()
    moving = Job.objects.filter(owner=user, status__in=ACTIVE - {JobStatus.PAUSED})
    seconds = []
    for job in moving:
        end = job.estimated_completion if job.status == JobStatus.PROCESSING else None
        seconds.append(shortest if end is None else (end - now).total_seconds())
    if not seconds:
        return unknown
    return int(min(max(min(seconds), shortest), longest))


def request_fingerprint(payload: dict[str, Any], upload: File | None) -> str:
    rows = payload.get("rows")
    if isinstance(rows, JSONLines):
        return _fingerprint_with_rows(payload, rows)
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode())
    if upload is not None:
        fh = upload.open("rb") if hasattr(upload, "open") else upload
        fh.seek(0)
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
        fh.seek(0)
    return digest.hexdigest()


def _fingerprint_with_rows(payload: dict[str, Any], rows: JSONLines) -> str:
    """The fingerprint of the payload with its rows as a list, a row at a time: the same hash
    as of the list, so rows that differ only in whitespace, escapes or key order match."""
    marker = f"rows-{uuid.uuid4().hex}"
    text = json.dumps({**payload, "rows": marker}, sort_keys=True, default=str)
    head, tail = text.split(json.dumps(marker), 1)
    digest = hashlib.sha256((head + "[").encode())
    separator = ""
    for row in rows:
        digest.update((separator + json.dumps(row, sort_keys=True, default=str)).encode())
        separator = ", "
    digest.update(("]" + tail).encode())
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
        earlier = _earlier(user, idempotency_key, fingerprint)
        if earlier is not None:
            return earlier, False
        # A key older than the window is free again (and only such a key: a job of a request
        # racing this one keeps its key, and the unique constraint settles the race below).
        Job.objects.filter(
            owner=user,
            idempotency_key=idempotency_key,
            created_at__lt=timezone.now() - IDEMPOTENCY_WINDOW,
        ).update(idempotency_key=None)

    # Early, so a request over the quota is refused before its input is read; again below.
    check_active_quota(user)
    if source.rows is not None and len(source.rows) > settings.BATCHHUB_MAX_ROWS:
        # Counted already: no need to check a million rows to refuse the rest.
        raise _too_many_rows(len(source.rows), getattr(source.rows, "stopped", False))
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
        raise _too_many_rows(report.row_count)
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
    try:
        with transaction.atomic():
            # Requests of one account take turns from here to the commit: each counts the jobs
            # the others made, so parallel creates cannot all pass the quota's first look.
            lock_account(user)
            if idempotency_key:
                earlier = _earlier(user, idempotency_key, fingerprint)
                if earlier is not None:
                    return earlier, False
            check_active_quota(user)
            job.save()  # first: a key taken meanwhile fails here, before any file is written
            job.input_file.save(filename, content, save=False)
            job.save(update_fields=["input_file"])
            states.record(
                job,
                "created",
                f"Job created from {source.described} ({report.row_count:,} rows) "
                f"with {proc.name}.",
                actor=actor,
            )
            transaction.on_commit(lambda: enqueue.start_ingest(job.pk))
    except IntegrityError:
        # The same key's request made its job between our look and our save: that job is the
        # answer, as if this request had come second, which it did.
        earlier = _earlier(user, idempotency_key, fingerprint) if idempotency_key else None
        if earlier is None:
            raise
        return earlier, False
    return job, True


def lock_account(user) -> None:
    """Hold the user's row until the transaction ends (PostgreSQL); SQLite's transactions here
    begin IMMEDIATE, which already lets one writer in at a time."""
    list(get_user_model().objects.select_for_update().filter(pk=user.pk).values_list("pk"))


def check_active_quota(user) -> None:
    active = Job.objects.filter(owner=user, status__in=ACTIVE).count()
    if active >= settings.BATCHHUB_MAX_ACTIVE_JOBS:
        raise QuotaExceeded(
            f"You have {active:,} active jobs; the limit is {settings.BATCHHUB_MAX_ACTIVE_JOBS:,}. "
            "Wait for one to finish or cancel one.",
            retry_after=seconds_until_a_job_ends(user),
            details={"limit": "active_jobs", "max": settings.BATCHHUB_MAX_ACTIVE_JOBS},
        )


def _earlier(user, idempotency_key: str, fingerprint: str) -> Job | None:
    """The job made by an earlier request with this key within the window, if the request was
    the same one; a different request with the key is a conflict."""
    earlier = Job.objects.filter(
        owner=user,
        idempotency_key=idempotency_key,
        created_at__gte=timezone.now() - IDEMPOTENCY_WINDOW,
    ).first()
    if earlier is not None and earlier.request_hash != fingerprint:
        raise Conflict(
            "This Idempotency-Key was used with a different request.",
            code="idempotency_conflict",
        )
    return earlier
