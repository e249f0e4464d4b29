"""Retention: removing jobs for good, whether they expired or their owner deleted them.

A job can hold a million rows and an upload of 100 MB. Deleting it through the ORM alone would
make Django collect every Row in memory for the cascade; instead rows go first in index ranges
with plain DELETE statements (each one short, using the (job, index) unique index), then the now
small job row is deleted and Chunk/JobEvent follow by cascade. The uploaded file and anything
else under the job's upload folder are removed from storage first.

Expired jobs are already invisible (`Job.objects.visible()`) before the sweep runs, so the sweep
can be hourly without an expired job ever showing.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta

from django.conf import settings
from django.core.files.storage import default_storage
from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from .models import Job, Row, upload_path

logger = logging.getLogger(__name__)

ROW_BATCH = 10_000  # indexes per DELETE: each statement stays well under a second
JOB_BATCH = 100  # expired jobs fetched per query by the sweep


def expiry_for(finished_at: datetime) -> datetime:
    """When a job that finished at `finished_at` expires (BATCHHUB_RETENTION_DAYS later)."""
    return finished_at + timedelta(days=settings.BATCHHUB_RETENTION_DAYS)


def _storage_files(job: Job) -> list[str]:
    """Every stored file of the job: its upload plus whatever else sits in its upload folder."""
    names = []
    if job.input_file and job.input_file.name:
        names.append(job.input_file.name)
    folder = os.path.dirname(upload_path(job, "x"))
    try:
        _dirs, files = default_storage.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        files = []
    names.extend(f"{folder}/{name}" for name in files if f"{folder}/{name}" not in names)
    return names


def delete_job_files(job: Job) -> int:
    """Delete the job's files from storage; returns how many were there. Missing files are fine."""
    deleted = 0
    storage = job.input_file.storage if job.input_file else default_storage
    for name in _storage_files(job):
        if storage.exists(name):
            storage.delete(name)
            deleted += 1
    # Local disk keeps an empty folder per job otherwise; object stores have no folders.
    folder = os.path.dirname(upload_path(job, "x"))
    try:
        os.rmdir(default_storage.path(folder))
    except (NotImplementedError, FileNotFoundError, OSError):
        pass
    return deleted


def delete_rows(job_pk: int) -> int:
    """Delete a job's rows in index ranges with raw DELETEs; returns the number deleted."""
    top = Row.objects.filter(job_id=job_pk).aggregate(m=Max("index"))["m"]
    if top is None:
        return 0
    qn = connection.ops.quote_name
    sql = (
        f"DELETE FROM {qn(Row._meta.db_table)} WHERE {qn('job_id')} = %s "
        f"AND {qn('index')} >= %s AND {qn('index')} < %s"
    )
    deleted = 0
    with connection.cursor() as cursor:
        for start in range(0, top + 1, ROW_BATCH):
            cursor.execute(sql, [job_pk, start, start + ROW_BATCH])
            deleted += max(cursor.rowcount, 0)
    return deleted


def purge_job(job: Job) -> None:
    """Remove a job for good: its files, its rows, then the job (chunks and events cascade).

    Used by the delete service (the caller cancels a running job first) and by the expiry sweep.
    Files go first: if the database part then fails, the job is retried by the next sweep or the
    next delete, whereas the opposite order could leave a file no row points at, forever.
    """
    delete_job_files(job)
    delete_rows(job.pk)
    with transaction.atomic():
        # Rows written by a worker that was mid-chunk are caught by this final pass.
        Row.objects.filter(job_id=job.pk).delete()
        Job.objects.filter(pk=job.pk).delete()


def expire_jobs(now: datetime | None = None) -> int:
    """Delete every job whose `expires_at` has passed; returns how many were deleted."""
    now = now or timezone.now()
    count = 0
    broken: set[int] = set()
    while True:
        batch = list(
            Job.objects.filter(expires_at__lte=now)
            .exclude(pk__in=broken)
            .order_by("expires_at", "pk")[:JOB_BATCH]
        )
        if not batch:
            return count
        for job in batch:
            try:
                purge_job(job)
            except Exception:
                # One broken file or job must not stop the sweep; it is tried again next time.
                logger.exception("could not delete expired job %s", job.public_id)
                broken.add(job.pk)
                continue
            count += 1
            logger.info("deleted expired job %s", job.public_id)
