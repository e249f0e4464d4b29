"""The end of a job's processing: cancel the rows left behind, recount, finalize exactly once."""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from . import livestatus, states
from .models import Chunk, Job, JobEvent, JobStatus, Row, RowStatus
from .syncpoint import _add_sample

logger = logging.getLogger(__name__)

# Rows changed per statement when a whole job's rows change at once (cancel, cleanup): each batch
# is its own short transaction, so the write lock is never held for the whole job.
BULK_ROWS = 10_000


def cancel_leftovers(job_pk: int, *, spare_late: bool = False) -> int:
    """Rows of a cancelled or failed job left `pending` or `running` become `cancelled`.

    They will never run: a worker died or failed mid-chunk after the job was cancelled, or a
    cancel was cut short. Done in index ranges of BULK_ROWS rows, one short transaction each,
    then the counters are set from one count of the rows. Returns the rows changed.

    `spare_late`: leave the rows of chunks a cancelled loop left to the threads of its requests
    in flight (done, and leased until the requests' deadline: chunk_loop._Handover), which
    write them when their answers come back; the reaper's cleanup ends them if that process is
    gone.
    """
    job = Job.objects.filter(pk=job_pk).first()
    if job is None or job.status not in (JobStatus.CANCELLED, JobStatus.FAILED):
        return 0
    spared = Q()
    if spare_late:
        late = Chunk.objects.filter(job_id=job_pk, done=True, lease_until__gte=timezone.now())
        for start, end in late.values_list("start", "end"):
            spared |= Q(index__gte=start, index__lt=end)
    changed = 0
    for start in range(0, job.total, BULK_ROWS):
        rows = Row.objects.filter(
            job_id=job_pk,
            index__gte=start,
            index__lt=start + BULK_ROWS,
            status__in=(RowStatus.PENDING, RowStatus.RUNNING),
        )
        if spared:
            rows = rows.exclude(spared)
        changed += rows.update(status=RowStatus.CANCELLED)
    with transaction.atomic():
        job = Job.objects.select_for_update().get(pk=job_pk)
        counts = recount(job)
        for name, value in counts.items():
            setattr(job, name, value)
        job.save(update_fields=[*counts, "updated_at"])
        livestatus.publish(job)
    if changed:
        logger.info("job %s: %d rows left behind cancelled", job.public_id, changed)
    return changed


def _cancel_leftovers_after_failure(job_pk: int) -> None:
    """A loop failed mid-chunk: if the job was cancelled meanwhile, nobody will run its rows."""
    try:
        if Job.objects.filter(pk=job_pk, status=JobStatus.CANCELLED).exists():
            # Another loop's rows in a request at the cancel keep their answers (API.md).
            cancel_leftovers(job_pk, spare_late=True)
    except Exception as exc:  # the database may be what failed; the reaper finishes this later
        # One line: the loop's own failure has its traceback already, and most jobs whose loop
        # failed were not cancelled at all.
        logger.warning(
            "job %s: after its loop failed, could not look for a cancel to finish (%s: %s); "
            "the reaper will",
            job_pk,
            type(exc).__name__,
            exc,
        )


def recount(job: Job) -> dict[str, int]:
    counts = dict.fromkeys(("pending", "running", "succeeded", "failed", "cancelled"), 0)
    by_status = (
        Row.objects.filter(job_id=job.pk)
        .values_list("status")
        .annotate(n=Count("index"))
        .order_by()
    )
    for status, n in by_status:
        counts[status] = n
    return counts


def finalize(job_pk: int) -> Job | None:
    """Processing → finalizing → completed/partial, exactly once (under the job lock)."""
    # The rows are counted before the lock is taken (a read: on SQLite it does not hold the one
    # write lock for the length of a count of the whole job); under the lock the job's counters
    # must still match it, else it is counted again there.
    counted = recount(Job(pk=job_pk))
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_pk).first()
        if job is None or job.status != JobStatus.PROCESSING:
            return None  # deleted meanwhile (its rows with it), or finished by another loop
        if Chunk.objects.filter(job_id=job.pk, done=False).exists():
            return None
        same = all(getattr(job, k) == v for k, v in counted.items())
        counts = counted if same else recount(job)
        drift = {k: v for k, v in counts.items() if getattr(job, k) != v}
        if drift:
            # Counters are kept per chunk for O(1) polls; this one full count at the end makes
            # sure the finished job's numbers are exact even after crashes.
            logger.warning("job %s counters corrected at finalize: %s", job.public_id, drift)
        for name, value in counts.items():
            setattr(job, name, value)
        _add_sample(job, timezone.now())
        job.save(update_fields=[*counts, "samples", "updated_at"])
        job = states.transition(job, JobStatus.FINALIZING)
        final = _outcome(job)
        summary = f"{job.succeeded:,} succeeded, {job.failed:,} failed"
        if job.cancelled:
            summary += f", {job.cancelled:,} cancelled"
        return states.transition(job, final, message=summary + ".")


def _outcome(job: Job) -> str:
    """A job that was cancelled stays cancelled when a retry of its failed rows ends: the rows the
    cancel left never ran, and "completed with failures" would say they had."""
    if job.cancelled and JobEvent.objects.filter(job_id=job.pk, type="cancelled").exists():
        return JobStatus.CANCELLED
    unfinished = job.failed + job.cancelled + job.pending + job.running
    return JobStatus.PARTIAL if unfinished else JobStatus.COMPLETED
