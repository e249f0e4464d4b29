"""Chunks of a job: the plan (loops, threads, chunk size), claiming a chunk with a lease, and
taking over the rows a previous holder left in flight (jobs/runner.py describes the recovery)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from . import enqueue, holders, livestatus, states, steps
from .models import Chunk, Job, JobStatus, Row, RowStatus
from .processors import Processor, get_processor_class

logger = logging.getLogger(__name__)

IO_THREADS_PER_LOOP = 16
IO_CHUNK_ROWS_PER_THREAD = 60
# Chunks this process still holds but could not give back (the database stayed away): a later
# loop of this thread may take them without waiting for their lease.
_LEFT_BEHIND: set[int] = set()


@dataclass(frozen=True, slots=True)
class Plan:
    loops: int  # worker loops (Celery tasks in flight) for the job
    threads: int  # rows in flight inside one loop
    chunk_rows: int


def plan_for(job: Job, processor_cls: type[Processor] | None = None) -> Plan:
    processor_cls = processor_cls or get_processor_class(job.processor)
    concurrency = max(1, job.concurrency)
    if processor_cls is not None and processor_cls.io_bound:
        # `concurrency` is a promise to the service being called: the requests in flight over all
        # loops add up to it. Loops of up to IO_THREADS_PER_LOOP threads let a busy job spread
        # over several worker processes.
        loops = math.ceil(concurrency / IO_THREADS_PER_LOOP)
        threads = concurrency // loops
        loops = concurrency // threads  # every loop gets `threads`; none exceeds the total
        # Rows a thread: at the end of a chunk its last rows drain and the next one is claimed,
        # a cost spread over the chunk's rows (figures in docs/performance.md).
        chunk_rows = max(50, threads * IO_CHUNK_ROWS_PER_THREAD)
    else:
        loops, threads = concurrency, 1
        chunk_rows = settings.BATCHHUB_CHUNK_ROWS
    if job.total:
        # Small jobs still spread over every loop.
        chunk_rows = max(1, min(chunk_rows, math.ceil(job.total / loops)))
    return Plan(loops=loops, threads=threads, chunk_rows=chunk_rows)


# An I/O job of at most this many rows, just read, runs its first loop's first step in the task
# that read it (jobs.tasks.ingest_job): the small jobs a person waits for in front of the page (a
# CPU job's head start is an extra step: jobs/runner.py).
HEAD_START_ROWS = 1000


def start_loops(job: Job, *, generation: int | None = None, first: bool = False) -> int | None:
    """Queue one worker loop (jobs.tasks.work) for each loop of the job's plan.

    `first`: the job was just read, by a task of the express queue. A small I/O job's first loop
    is then not queued: its first step would wait behind each step queued before it, each a long
    turn of a slow service's rows (a one-row job finished after 44 s behind one job of 64
    requests in flight). Returns that loop's start count for the reading task to run its step
    (None when every loop was queued).

    Afresh, in place of any started before: their steps may still be queued (a broker that
    keeps its messages through a restart of the workers, a resume soon after a pause, a retry)
    and would run beside the new loops. The reaper counts the new start itself, in the statement
    that finds the job's steps lost (jobs/steps.py), and passes the `generation` it made: read
    again here, a resume's start landing in between would get a second plan of its count."""
    if generation is None:  # still None if the database is busy: such steps run for any start
        generation = _new_start(job.pk)
    loops = plan_for(job).loops
    head = first and generation is not None and job.total <= HEAD_START_ROWS and _io_bound(job)
    sent = [enqueue.send("jobs.work", job.pk, generation) for _ in range(loops - head)]
    if any(sent):
        steps.queued(job.pk)
    return generation if head else None


def _io_bound(job: Job) -> bool:
    processor_cls = get_processor_class(job.processor)
    return processor_cls is not None and processor_cls.io_bound


def _new_start(job_pk: int) -> int | None:
    try:
        with transaction.atomic():
            Job.objects.filter(pk=job_pk).update(**steps.new_start())
            return steps.generation(job_pk)
    except OperationalError:
        return None  # the database is busy: the loops go on as before there were generations


def stand_by(job_pk: int, generation: int | None) -> bool:
    """For a loop that found no chunk to claim while others were held: whether it stops. Not
    when one became claimable meanwhile. A loop of the current start that stops is counted
    idle, under the job's lock, for `hand_on` to wake should a held chunk be given back by a
    loop that stops too."""
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_pk).first()
        if job is None:
            return True
        # Read after the lock: a chunk given back before `hand_on` looked is claimable here.
        if claimable_chunks(job_pk, timezone.now()).exists():
            return False
        if job.status == JobStatus.PROCESSING and generation == job.loop_generation:
            Job.objects.filter(pk=job_pk).update(idle_loops=F("idle_loops") + 1)
    return True


def hand_on(job_pk: int) -> bool:
    """For a loop that stops while the job processes (a pause it saw was lifted since, or the
    job's loops were started afresh): the chunks it gave back may have no loop to come for
    them, the new start's having found them held and stopped (`stand_by`). Wake one of those
    for them; never more loops than the start had. Returns whether the job is processing."""
    now = timezone.now()
    with transaction.atomic():
        job = Job.objects.select_for_update().filter(pk=job_pk).first()
        if job is None or job.status != JobStatus.PROCESSING:
            return False
        unheld = Chunk.objects.filter(job_id=job_pk, done=False).filter(
            Q(lease_until__isnull=True) | Q(lease_until__lt=now)
        )
        if not job.idle_loops or not unheld.exists():
            return True
        Job.objects.filter(pk=job_pk).update(idle_loops=F("idle_loops") - 1)
        generation = job.loop_generation
    if enqueue.send("jobs.work", job_pk, generation):
        steps.queued(job_pk)
    return True


def chunk_bounds(total: int, chunk_rows: int, loops: int = 1) -> list[tuple[int, int]]:
    """(start, end) of each chunk: full chunks, then smaller ones toward the end of the job.

    Loops claim chunks in order, so with equal chunks the last one can keep one loop busy for a
    whole chunk's time while the others have nothing left. As in guided scheduling, once fewer
    than two rounds of full chunks are left, each chunk is a 2 x loops-th of what remains, down
    to a 16th of a full chunk: the loops run out of work within about one small chunk of each
    other.
    """
    bounds: list[tuple[int, int]] = []
    start = 0
    smallest = max(1, chunk_rows // 16)
    while start < total:
        remaining = total - start
        size = chunk_rows
        if loops > 1 and remaining < 2 * loops * chunk_rows:
            size = max(smallest, min(chunk_rows, math.ceil(remaining / (2 * loops))))
        bounds.append((start, min(start + size, total)))
        start += size
    return bounds


def make_chunks(job: Job, plan: Plan) -> int:
    chunks = [
        Chunk(job=job, seq=seq, start=start, end=end)
        for seq, (start, end) in enumerate(chunk_bounds(job.total, plan.chunk_rows, plan.loops))
    ]
    Chunk.objects.bulk_create(chunks, batch_size=1000)
    return len(chunks)


def claimable_chunks(job_pk: int, now: datetime):
    """Chunks of the job a loop could claim now: not done, not leased, not backing off."""
    return (
        Chunk.objects.filter(job_id=job_pk, done=False)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lt=now))
        .filter(Q(available_at__isnull=True) | Q(available_at__lte=now))
    )


def _locked(qs):
    if connection.features.has_select_for_update_skip_locked:
        return qs.select_for_update(skip_locked=True)
    return qs


class StaleStart(Exception):
    """The job's loops were started afresh since the claiming step's own start."""


def claim_chunk(job_pk: int, generation: int | None = None) -> Chunk | None:
    """Lease the job's next chunk. Its `suspects` are the rows a previous holder died with.

    With the `generation` of the claiming loop: raises StaleStart, the claim undone (no attempt
    counted), if the job's loops were started afresh since that loop's step began."""
    now = timezone.now()
    with transaction.atomic():
        # A dead holder's chunk first: its rows count as running until taken over, and left
        # for last they did so for the rest of a long job (a 1M-row job's 9,800 for minutes).
        chunk = _abandoned_chunk(job_pk, now)
        if chunk is None:
            chunk = _locked(claimable_chunks(job_pk, now).order_by("seq")).first()
            if chunk is None:
                return None
        lease_until = now + timedelta(seconds=settings.BATCHHUB_LEASE_SECONDS)
        holder = holders.current()
        if generation is None:
            Chunk.objects.filter(pk=chunk.pk).update(
                lease_until=lease_until, claims=F("claims") + 1, holder=holder
            )
        elif not _lease_if_current(chunk.pk, job_pk, generation, lease_until, holder):
            raise StaleStart
        chunk.lease_until, chunk.holder = lease_until, holder
        chunk.claims += 1
        chunk.suspects = take_over(job_pk, chunk)
    return chunk


def _lease_if_current(
    chunk_pk: int, job_pk: int, generation: int, lease_until: datetime, holder: str
) -> bool:
    """Lease the chunk if the job's loops are still of the start `generation`: the write reads
    the start count itself, after SQLite's busy waits, in which the reaper's restart
    (jobs/steps.py) may land; past it, the restart sees the chunk held. Whether it was leased."""
    with connection.cursor() as cursor:
        cursor.execute(
            _LEASE_IF_CURRENT,
            [
                connection.ops.adapt_datetimefield_value(lease_until),
                holder,
                chunk_pk,
                job_pk,
                generation,
            ],
        )
        return cursor.rowcount == 1


# Written out: the ORM's EXISTS costs a claim more to build than the read it spares.
_LEASE_IF_CURRENT = (
    f"UPDATE {Chunk._meta.db_table} SET lease_until = %s, claims = claims + 1, holder = %s "
    f"WHERE id = %s AND EXISTS (SELECT 1 FROM {Job._meta.db_table} "
    f"WHERE id = %s AND loop_generation = %s)"
)


def _abandoned_chunk(job_pk: int, now: datetime) -> Chunk | None:
    """A leased chunk whose holder is gone (see jobs/holders.py): it need not wait for its lease."""
    leased = Chunk.objects.filter(
        job_id=job_pk,
        done=False,
        lease_until__gte=now,
        holder__startswith=holders.machine() + holders.SEPARATOR,
    ).filter(Q(available_at__isnull=True) | Q(available_at__lte=now))
    me = holders.current()
    for pk, holder in leased.order_by("seq").values_list("pk", "holder")[:64]:
        if holders.is_gone(holder) or (holder == me and pk in _LEFT_BEHIND):
            _LEFT_BEHIND.discard(pk)
            chunk = _locked(Chunk.objects.filter(pk=pk, holder=holder, done=False)).first()
            if chunk is not None:
                return chunk
    return None


def held(job_pk: int, now: datetime) -> bool:
    """Some loop, alive or not, holds a chunk of the job under a lease not run out."""
    return Chunk.objects.filter(job_id=job_pk, done=False, lease_until__gte=now).exists()


def needs_loops(job_pk: int, now: datetime) -> bool:
    """No live loop holds a chunk of the job, and there is one to claim."""
    leased = Chunk.objects.filter(job_id=job_pk, done=False, lease_until__gte=now)
    holders_now = list(leased.values_list("holder", flat=True)[:64])
    if any(not holders.is_gone(holder) for holder in holders_now):
        return False
    return bool(holders_now) or claimable_chunks(job_pk, now).exists()


def take_over(job_pk: int, chunk: Chunk, *, died: bool = True) -> list[int]:
    """Put back the rows a previous holder left in flight; return those to run again as suspects.

    They are the rows marked running (I/O processors) and a CPU group's range recorded on the
    chunk. With `died` (the holder is gone), the death counts as an attempt of each of them, and
    one found alone at the attempts limit is the row that kills its worker: it fails here. The
    counters move them from running to pending in the same transaction. Without `died` (a loop
    that lost the database gives its chunk back) they are just pending again.
    """
    in_flight = Q(status=RowStatus.RUNNING)
    if chunk.inflight_start is not None:
        in_flight |= Q(
            status=RowStatus.PENDING,
            index__gte=chunk.inflight_start,
            index__lt=chunk.inflight_end,
        )
    rows = Row.objects.filter(job_id=job_pk, index__gte=chunk.start, index__lt=chunk.end)
    left = list(rows.filter(in_flight).order_by("index").values_list("index", "status", "attempts"))
    if chunk.inflight_start is not None:
        Chunk.objects.filter(pk=chunk.pk).update(inflight_start=None, inflight_end=None)
        chunk.inflight_start = chunk.inflight_end = None
    if not left:
        return []
    # The job's lock before the rows', as cancel takes them.
    job = Job.objects.select_for_update().get(pk=job_pk)
    first, last = left[0][0], left[-1][0]
    span = rows.filter(index__gte=first, index__lte=last)
    if died:
        # A fast group's rows were started without a write of their own: the death is their
        # attempt. Rows marked running got theirs when they were marked.
        span.filter(in_flight, status=RowStatus.PENDING).update(attempts=F("attempts") + 1)
    attempts = {i: a + (died and st == RowStatus.PENDING) for i, st, a in left}
    culprit = left[0][0] if died and len(left) == 1 else None
    if culprit is not None and attempts[culprit] >= job.max_attempts:
        rows.filter(index=culprit).update(
            status=RowStatus.FAILED,
            error=f"The worker died while processing this row ({attempts[culprit]} attempts).",
            reason="The worker died while processing this row",
        )
        job.running -= 1
        job.failed += 1
        message = (
            f"Row {culprit + 1} stopped its worker {attempts[culprit]} times; it failed alone."
        )
        suspects: list[int] = []
    else:
        span.filter(status=RowStatus.RUNNING).update(status=RowStatus.PENDING)
        job.running -= len(left)
        job.pending += len(left)
        message = (
            f"A worker stopped with rows {first + 1}–{last + 1} in flight ({len(left):,} rows); "
            "they run again in halves to find any row that stops workers."
        )
        suspects = [i for i, _, _ in left] if died else []
    job.save(update_fields=["running", "pending", "failed", "updated_at"])
    livestatus.publish(job)
    if died:
        logger.info("job %s: %s", job.public_id, message)
        states.record(job, "recovered", message, data={"rows": [first + 1, last + 1]})
    return suspects


def give_back(job_pk: int, chunk: Chunk) -> None:
    """Release a chunk this loop could not finish (it lost the database): its rows in flight
    go back to pending, not as suspects, and any loop may claim it at once."""
    with transaction.atomic():
        held = Chunk.objects.select_for_update().filter(pk=chunk.pk, holder=chunk.holder).first()
        if held is None or held.done:
            return  # already taken over
        take_over(job_pk, held, died=False)
        Chunk.objects.filter(pk=held.pk).update(lease_until=None, holder="")
