"""Put stalled work back in motion (the `jobs.reap` task, every few seconds): restart a job whose
loops were lost, finalize one whose last loop died finishing, cancel rows a cancelled job left,
start again an ingest whose task was lost, resume auto-paused jobs whose wait is over, and send
webhook attempts that are due."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q

from batchhub import dbclock
from batchhub.api import InvalidState

from . import (
    chunks,
    enqueue,
    finish,
    held,
    holders,
    livestatus,
    runner,
    services,
    states,
    steps,
    webhook_deliveries,
)
from .ingest import loading
from .models import Chunk, Job, JobStatus

# A reading process found gone is replaced after this long since the job last moved: time for
# a redelivered task to have started reading again (it records itself as the reader).
READER_GRACE = timedelta(seconds=5)

UNASKED = object()  # the queue not yet asked this round

# What the job's timeline says of a restart: a process that held its rows is gone, or no step of
# its loops is left (a worker killed with the messages it had taken, a broker restarted without
# them, a step that failed).
WORKER_STOPPED = "No progress for a while: work restarted (a worker stopped)."
STEPS_LOST = (
    "No progress for a while, and none of its work was queued or running (lost with a worker "
    "or the broker): work restarted."
)


def _restart(job: Job, now, stall: timedelta, left_before) -> bool:
    """Start the job's loops afresh if its steps are gone; say why on its timeline."""
    with transaction.atomic():
        generation = steps.take_for_lost(job.pk, now=now, stall=stall, left_before=left_before)
        if generation is None:
            return False  # a step waits its turn, or has just started
        # needs_loops found no live holder: a chunk still leased was a dead process's.
        message = WORKER_STOPPED if chunks.held(job.pk, now) else STEPS_LOST
        event = states.record(job, "recovered", message)
        job.refresh_from_db()
        # Sync points publish no event id of their own: the key learns of this one here.
        livestatus.publish(job, event.pk)
        # The count this restart made: a resume landing before the commit's callback has its own.
        transaction.on_commit(
            lambda job=job, gen=generation: chunks.start_loops(job, generation=gen)
        )
    return True


def reap(now=None, probe=None) -> dict[str, int]:
    """Put stalled work back in motion; resume auto-paused jobs whose wait is over.

    `probe`: when this round's own message was queued (jobs.tasks.reap), behind the job steps
    queued before it (the database's time)."""
    # The database's clock: the steps' times and the reaper's message are on it (steps.py).
    now = now or dbclock.now()
    lease = timedelta(seconds=settings.BATCHHUB_LEASE_SECONDS)
    done = {"restarted": 0, "resumed": 0, "reingested": 0, "finalized": 0}

    # A loop commits at least every few seconds (chunk_loop.MAX_SYNC_GAP): a job without a commit
    # for STALL_SECONDS whose chunks no live loop holds has either lost its loops or waits for
    # their next steps' turn behind other jobs' (jobs/steps.py tells which), however long the
    # lease and however long the wait.
    stall = min(lease, timedelta(seconds=runner.STALL_SECONDS))
    stale = Job.objects.filter(status=JobStatus.PROCESSING, updated_at__lt=now - stall)
    left_before = UNASKED  # asked once a round, when a job looks stalled
    held_steps = UNASKED  # the workers asked once a round, when a job looks lost
    for job in stale:
        if chunks.needs_loops(job.pk, now):
            if left_before is UNASKED:
                left_before = steps.left_queue_before(now, probe, lease)
            if not steps.looks_lost(job.pk, now=now, stall=stall, left_before=left_before):
                continue
            if held_steps is UNASKED:
                held_steps = held.held()
            if held_steps and held.holds(held_steps, job.pk, job.loop_generation):
                continue  # a live worker holds its step, past the queue: it runs once free
            if _restart(job, now, stall, left_before):
                done["restarted"] += 1
        elif not Chunk.objects.filter(job=job, done=False).exists():
            if finish.finalize(job.pk):
                done["finalized"] += 1

    for job in Job.objects.filter(status=JobStatus.PAUSED, resume_at__lte=now):
        try:
            services.resume(job, actor="system", event_type="auto_resumed")
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
        # A lease outlives a cancel when rows were left in a request, for their threads to write
        # (chunk_loop._Handover); it stops counting once its process is known gone.
        leased = Chunk.objects.filter(job=job, lease_until__gte=now).values_list(
            "holder", flat=True
        )
        if all(holders.is_gone(holder) for holder in leased):
            done["leftovers"] += finish.cancel_leftovers(job.pk)

    # An ingest whose task was lost (a worker killed while reading) is started again: at once
    # when its process is known to be gone, else after a wait no ingest of a large file takes.
    lost = list(
        Job.objects.filter(
            Q(status=JobStatus.QUEUED, created_at__lt=now - timedelta(minutes=2))
            | Q(status=JobStatus.VALIDATING, updated_at__lt=now - 5 * lease)
        )
    )
    reading = Job.objects.filter(
        status=JobStatus.VALIDATING,
        updated_at__lt=now - READER_GRACE,
        updated_at__gte=now - 5 * lease,
    )
    for job in reading:
        if loading.reader_gone(job):
            # Names no reader: until the new attempt names itself, this one is not taken for
            # gone again (its message may wait behind others), which would start a second.
            states.record(
                job,
                "ingest_requeued",
                "The worker reading the input stopped; the input is read again.",
                data={loading.HOLDER: ""},
            )
            lost.append(job)
    for job in lost:
        Job.objects.filter(pk=job.pk).update(updated_at=now)
        transaction.on_commit(lambda pk=job.pk: enqueue.start_ingest(pk))
        done["reingested"] += 1

    # Webhook attempts whose message was lost, or whose wait was too long for one.
    done["webhooks"] = webhook_deliveries.dispatch_due(now)
    return done
