"""Put stalled work back in motion (the `jobs.reap` task, every few seconds): restart a job whose
loops were lost, finalize one whose last loop died finishing, cancel rows a cancelled job left,
start again an ingest whose task was lost, resume auto-paused jobs whose wait is over, and send
webhook attempts that are due."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from batchhub.api import InvalidState

from . import (
    chunks,
    enqueue,
    finish,
    holders,
    livestatus,
    runner,
    services,
    states,
    webhook_deliveries,
)
from .ingest import loading
from .models import Chunk, Job, JobStatus

# A reading process found gone is replaced after this long since the job last moved: time for
# a redelivered task to have started reading again (it records itself as the reader).
READER_GRACE = timedelta(seconds=5)


def reap(now=None) -> dict[str, int]:
    """Put stalled work back in motion; resume auto-paused jobs whose wait is over."""
    now = now or timezone.now()
    lease = timedelta(seconds=settings.BATCHHUB_LEASE_SECONDS)
    done = {"restarted": 0, "resumed": 0, "reingested": 0, "finalized": 0}

    # A loop commits at least every few seconds (chunk_loop.MAX_SYNC_GAP): a job without a commit
    # for STALL_SECONDS whose chunks nobody holds has lost its loops (their messages went with a
    # broker restart, or their worker was killed whole), however long the lease.
    stall = min(lease, timedelta(seconds=runner.STALL_SECONDS))
    stale = Job.objects.filter(status=JobStatus.PROCESSING, updated_at__lt=now - stall)
    waiting: int | None = None  # asked once a round, of the broker, when a job looks stalled
    for job in stale:
        if chunks.needs_loops(job.pk, now):
            if job.updated_at >= now - lease and not chunks.held(job.pk, now):
                # Its loops' next steps may be among the messages waiting for a pool process
                # (the jobs of a busy worker take turns): new loops would put more requests in
                # flight than its concurrency, and the event would say a worker stopped. Once
                # nothing waits, or after the lease, its loops are lost.
                if waiting is None:
                    waiting = enqueue.waiting()
                if waiting:
                    continue
            event = states.record(
                job, "recovered", "No progress for a while: work restarted (a worker stopped)."
            )
            Job.objects.filter(pk=job.pk).update(updated_at=now)
            job.updated_at = now
            # Sync points publish no event id of their own: the key learns of this one here.
            livestatus.publish(job, event.pk)
            transaction.on_commit(lambda job=job: chunks.start_loops(job, afresh=False))
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
