"""Claim and process rows: the worker loop of the job engine.

A job's rows are split into chunks (ranges of row indexes). A worker loop claims one chunk with
a lease (SKIP LOCKED on PostgreSQL; SQLite serialises writers so a plain claim is exclusive),
processes its rows and releases it (an I/O processor's loop claims its next chunk while the
last rows of one are in flight, and holds both until they drain). Progress is committed at
"sync points": one transaction that writes the finished rows' outputs (one multi-row UPDATE),
bumps the job's counters, marks the next rows running (attempts + 1), renews the lease and
reads the job's status, so pause and cancel are seen within a fraction of a second.

Recovery: a worker killed mid-chunk loses at most the rows it had started. Its chunk is taken
over at once by a loop of the same machine (jobs/holders.py), else when the lease runs out; the
rows it had in flight count the death as an attempt and are run again in halves (bisection), so a
crash costs a few re-runs at full speed and a row that kills its worker every time ends failed
alone after the attempts limit. A loop that loses the database reconnects and gives its chunk
back. Counters stay exact at every commit: `running` is the rows in flight under a live holder.
A row whose output the database refuses (a value it cannot store) is no crash: its sync point
writes the batch again a row at a time, and that row alone fails, saying why.

This module is one step of a worker loop (work_once). The parts: chunks.py (plan, claim, take
over), chunk_loop.py (a chunk's rows through the processor), syncpoint.py (the sync point's
transaction) and finish.py (leftovers, recount, finalize).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.db import InterfaceError, OperationalError, connection
from django.utils import timezone

from . import enqueue, livestatus, states, steps
from .chunk_loop import close_processor, process_chunk, release_chunk
from .chunks import (
    _LEFT_BEHIND,
    HEAD_START_ROWS,
    StaleStart,
    claim_chunk,
    give_back,
    hand_on,
    plan_for,
    stand_by,
)
from .finish import _cancel_leftovers_after_failure, cancel_leftovers, finalize
from .models import Chunk, Job, JobStatus
from .processors import ParamsError, Processor, ProcessorContext, get_processor_class
from .syncpoint import CPU_GROUP_ROWS, ChunkRun

logger = logging.getLogger(__name__)

STALL_SECONDS = 5.0  # no commit for this long and no chunk held: the job's loops were lost
# A worker task goes on to the job's next chunk until it has run this long: the processor (and its
# HTTP connections) and the measured group size carry over, and the task round trip through the
# broker is paid once per few chunks instead of once per chunk. Tasks stay short.
TASK_SECONDS = 2.0
# An I/O processor's loop claims the job's next chunk while its current one's last rows are in
# flight (chunk_loop._run_threaded), for this long within a task: its chunks take seconds each,
# so a task is still one chunk or a few, and the threads do not idle at each chunk's end.
IO_TASK_SECONDS = 8.0
# Past IO_TASK_SECONDS an I/O step also ends mid-chunk once a message waits for a pool process
# (asked every TURN_CHECK_SECONDS): a chunk of a slow service's rows takes minutes, and a new
# job's ingest, another job's step or a webhook would wait that long behind it. Ending costs the
# threads idling while the rows in flight come in, so a step runs at least TURN_ROW_TIMES of
# its rows' time first. Past TURN_MAX_SECONDS it ends anyway, far inside the broker's
# visibility timeout.
TURN_CHECK_SECONDS = 1.0
TURN_ROW_TIMES = 20
TURN_MAX_SECONDS = 300.0
# A message in the express queue (a new job's read or first step, a webhook delivery: each short,
# and a person waits for it) ends an I/O step once it has run this long (or its io_seconds),
# whatever its rows' time. Such messages are few, and so are the drains they cost.
EXPRESS_TURN_SECONDS = TASK_SECONDS
# After losing the database a loop tries to reconnect this often, for this long within its task
# (then its task is queued again), and gives its chunk back as soon as it is connected.
RECONNECT_INTERVAL = 0.25
RECONNECT_SECONDS = 30.0
DATABASE_LOST = (OperationalError, InterfaceError)


def _database_lost(job_pk: int, held: list[Chunk], exc: Exception) -> Step:
    """Reconnect, give the chunks back, and go on; if the database stays away, come back later.

    The transaction that failed was rolled back (or committed just before the connection went):
    either way the database says what is done, and the rows this loop had in memory are redone.
    """
    logger.warning("job %s: lost the database (%s); reconnecting", job_pk, exc)
    livestatus.withdraw(job_pk)
    deadline = time.monotonic() + RECONNECT_SECONDS
    while True:
        try:
            connection.close()
        except DATABASE_LOST:
            pass
        try:
            connection.ensure_connection()
            for chunk in held:
                give_back(job_pk, chunk)  # a chunk already given back is left as it is
            return Step("continue")
        except DATABASE_LOST:
            if time.monotonic() >= deadline:
                _LEFT_BEHIND.update(chunk.pk for chunk in held)
                return Step("wait", 1.0)
            time.sleep(RECONNECT_INTERVAL)


# --- one step of a worker loop -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Step:
    action: str  # "continue": claim again; "wait": come back after `delay`; "stop"
    delay: float = 0.0
    # Until when (time.monotonic) the job counts a next step queued now as queued already: its
    # last sync point said so (jobs/steps.py, QUEUED_WITHIN).
    queued_until: float | None = None


def work_once(
    job_pk: int,
    *,
    seconds: float = 0.0,
    io_seconds: float = 0.0,
    generation: int | None = None,
    head: bool = False,
) -> Step:
    """Claim a chunk of the job and process it, and go on to the next one while less than
    `seconds` have passed (an I/O processor's loop: claims the next one before the current one
    drains while less than `io_seconds` have); say what the loop should do next.

    `head`: a step run by a task of the express queue (jobs.tasks.ingest_job), which gives its
    process up to any message waiting once it has run `io_seconds`."""
    held: list[Chunk] = []
    try:
        return _work(job_pk, seconds, io_seconds, held, generation, head)
    except DATABASE_LOST as exc:
        return _database_lost(job_pk, held, exc)


def head_start(job_pk: int) -> None:
    """A first step of a small job just read, run by the task that read it, when its processor
    is CPU-bound (such a step ends within TASK_SECONDS, or its few rows).

    The job's loops are queued behind every step queued before them: a 20-row job waited a
    minute or more for them while other jobs ran, though its whole work is one short step. Its
    read came through the express queue, so here it starts at once, and is often done. The
    loops, queued meanwhile, take what is left (and a job already done stops them at once).
    Only jobs of at most HEAD_START_ROWS rows: a CPU step stops only between chunks, and a larger
    job's chunk of a slow CPU processor would hold the express queue's task long.
    """
    job = Job.objects.filter(pk=job_pk).only("status", "processor", "total").first()
    if job is None or job.status != JobStatus.PROCESSING or job.total > HEAD_START_ROWS:
        return
    processor_cls = get_processor_class(job.processor)
    if processor_cls is None or processor_cls.io_bound:
        return  # a small I/O job's first loop is run by the task instead (chunks.start_loops)
    work_once(job_pk, seconds=TASK_SECONDS)


def _work(
    job_pk: int,
    seconds: float,
    io_seconds: float,
    held: list[Chunk],
    generation: int | None,
    head: bool = False,
) -> Step:
    # Its start stamped as the job is read (jobs/steps.py): a waiting step is not a lost one.
    job = steps.start(job_pk)
    if job is None or job.status != JobStatus.PROCESSING:
        return Step("stop")
    if generation is not None and generation != job.loop_generation:
        # A loop of an earlier start: the job's loops were started afresh. Its last step may
        # have given back a chunk the new ones found held.
        _hand_on(job.pk)
        return Step("stop")
    processor_cls = get_processor_class(job.processor)
    if processor_cls is None:
        states.transition(
            job,
            JobStatus.FAILED,
            error=(
                "processor_missing",
                f"The processor '{job.processor}' is not installed on the workers.",
            ),
            message=f"Processor '{job.processor}' is not installed on the workers.",
        )
        return Step("stop")
    began = time.monotonic()
    processor: Processor | None = None
    group_rows = CPU_GROUP_ROWS

    def next_chunk() -> Chunk | None:
        if time.monotonic() - began >= io_seconds:
            return None
        taken = claim_chunk(job_pk)
        if taken is not None:
            held.append(taken)
        return taken

    asked = [began]

    def turn_over(row_seconds: float) -> bool:
        now = time.monotonic()
        ran = now - began
        # First: slow rows put their TURN_ROW_TIMES past it, and the step would run its chunk.
        if ran >= TURN_MAX_SECONDS:
            return True
        if ran < min(io_seconds, EXPRESS_TURN_SECONDS) or now - asked[0] < TURN_CHECK_SECONDS:
            return False
        asked[0] = now
        express, others = enqueue.waiting_express()
        if express or (head and others):
            return True
        return others > 0 and ran >= max(io_seconds, TURN_ROW_TIMES * row_seconds)

    def retire(done: ChunkRun) -> None:
        release_chunk(done)
        held.remove(done.chunk)

    try:
        while True:
            try:
                chunk = claim_chunk(job.pk, generation)
            except StaleStart:
                # Started afresh while this step waited for its claim (a busy database): the
                # new loops take the chunks.
                _hand_on(job.pk)
                return Step("stop")
            if chunk is None:
                return _no_chunk(job, generation)
            held[:] = [chunk]
            if processor is None:
                plan = plan_for(job, processor_cls)
                try:
                    processor = processor_cls(
                        job.params,
                        context=ProcessorContext(
                            owner_id=job.owner_id, job_id=job.public_id, concurrency=plan.threads
                        ),
                    )
                except ParamsError as exc:
                    give_back(job.pk, chunk)
                    held.clear()
                    return _params_refused(job, exc)
            try:
                run = process_chunk(
                    job,
                    chunk,
                    processor,
                    plan,
                    group_rows,
                    next_chunk=next_chunk,
                    retire=retire,
                    turn_over=turn_over if io_seconds else None,
                )
            except Job.DoesNotExist:
                # Deleted while the chunk ran (DELETE takes its rows and chunks with it): the
                # chunk's next sync point found no job. Nothing is left to do or to clean up.
                if Job.objects.filter(pk=job.pk).exists():
                    raise
                held.clear()
                return Step("stop")
            except Exception:
                _cancel_leftovers_after_failure(job.pk)
                raise
            release_chunk(run)
            held.clear()
            stale = generation is not None and generation != run.job.loop_generation
            if run.status != JobStatus.PROCESSING or stale:
                # Paused (perhaps resumed since), cancelled, or started afresh: the loops of
                # the new start may have found this chunk held and stopped.
                _hand_on(job.pk)
                return Step("stop")
            if time.monotonic() - began >= seconds:
                if not Chunk.objects.filter(job_id=job.pk, done=False).exists():
                    # The job's last chunk: its end need not wait for the next step's turn
                    # behind every step queued meanwhile.
                    finalize(job.pk)
                    return Step("stop")
                return Step("continue", queued_until=run.queued_until)
            job, group_rows = run.job, run.group_rows  # as of the chunk's last sync point
    finally:
        if processor is not None:
            # Calls left in a request at a cancel still use its client: the last one closes it.
            close_processor(processor)


def _hand_on(job_pk: int) -> None:
    """A loop stops while its job may process: the loops that found its chunks held and stopped
    get them (chunks.hand_on), and if it did the job's last rows, the job ends here."""
    # A cancelled or paused job is not counted for a finalize that would not happen.
    if hand_on(job_pk) and not Chunk.objects.filter(job_id=job_pk, done=False).exists():
        finalize(job_pk)


# The error code of a job whose params the workers refuse; retrying its rows cannot help.
PARAMS_REFUSED = "invalid_params"


def _params_refused(job: Job, exc: ParamsError) -> Step:
    """The workers refuse the job's params (the processor checks more than when the job was
    made, or a credential it names is gone): every claim would fail the same way, the chunk
    coming back each lease for ever, so the job fails once, saying why."""
    states.transition(
        job,
        JobStatus.FAILED,
        error=(PARAMS_REFUSED, f"The workers refuse this job's params: {exc}"),
        message=f"The workers refuse this job's params: {exc}",
    )
    cancel_leftovers(job.pk)
    return Step("stop")


def _no_chunk(job: Job, generation: int | None = None) -> Step:
    """Nothing to claim: finish the job, wait for backed-off rows, or leave it to other loops."""
    now = timezone.now()
    open_chunks = Chunk.objects.filter(job_id=job.pk, done=False)
    if not open_chunks.exists():
        finalize(job.pk)
        return Step("stop")
    leased = open_chunks.filter(lease_until__gte=now).exists()
    if leased:
        # Another loop holds work; it finalizes when it is done.
        return Step("stop") if stand_by(job.pk, generation) else Step("continue")
    next_at = open_chunks.order_by("available_at").values_list("available_at", flat=True).first()
    if next_at is not None and next_at > now:
        return Step("wait", min(60.0, (next_at - now).total_seconds() + 0.05))
    return Step("continue")
