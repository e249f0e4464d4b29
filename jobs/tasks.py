"""Thin Celery entry points: they take ids, call the engine, and are safe to run twice."""

from __future__ import annotations

import logging
import time

from celery import shared_task

from batchhub import dbspace

# webhook_tasks holds the webhook sender's task, held the workers' answer to which steps they
# hold: imported here so that autodiscovery of jobs.tasks registers them with the workers.
from . import (
    held,  # noqa: F401
    housekeeping,
    reaper,
    runner,
    services,
    steps,
    uploads,
    webhook_tasks,  # noqa: F401
)
from .ingest import loading

logger = logging.getLogger(__name__)

# The next step of a loop is its only trace in the broker: through a broker restart the task
# keeps trying to queue it (about 30 s) rather than dropping the loop on the first refusal.
BROKER_RETRY = {"max_retries": 60, "interval_start": 0, "interval_step": 0.25, "interval_max": 0.5}


@shared_task(name="jobs.ingest", acks_late=True)
def ingest_job(job_pk: int) -> None:
    head = loading.ingest(job_pk)
    if head is not None:
        # A small I/O job's first loop, not queued (chunks.start_loops): its first step runs
        # here, and its next ones are queued as any loop's. A redelivered read does not run it
        # again: if this process dies, the reaper finds the loop gone and starts it afresh.
        work(job_pk, head, head=True)
    else:
        runner.head_start(job_pk)


@shared_task(name="jobs.work", acks_late=True)
def work(job_pk: int, generation: int | None = None, head: bool = False) -> None:
    """One step of a worker loop: a chunk or a few (up to runner.TASK_SECONDS; an I/O
    processor's chunks, up to runner.IO_TASK_SECONDS), then the loop goes on as a fresh task.

    `head`: a small I/O job's first step, run by the task that read it (ingest_job), from the
    express queue: short, as other messages there wait behind it; the loop's next steps go to
    the usual queue.

    Short tasks keep every message far inside the broker's visibility timeout and let several
    jobs share the workers fairly. The job records when its steps are queued and start
    (jobs/steps.py; a step's start as it reads the job), so that one waiting its turn is not
    taken for lost.
    """
    step = runner.work_once(
        job_pk,
        seconds=runner.TASK_SECONDS,
        io_seconds=runner.TASK_SECONDS if head else runner.IO_TASK_SECONDS,
        generation=generation,
        head=head,
    )
    if step.action == "continue":
        work.apply_async((job_pk, generation), retry=True, retry_policy=BROKER_RETRY)
        if step.queued_until is None or time.monotonic() >= step.queued_until:
            steps.queued(job_pk)
    elif step.action == "wait":
        work.apply_async(
            (job_pk, generation), countdown=step.delay, retry=True, retry_policy=BROKER_RETRY
        )
        # Once due, a delayed step waits in the worker that holds it, out of the queue, for a
        # pool process: counted as queued until one is free (a step's usual length; a longer
        # wait is taken for lost, and the step then stops as an earlier start's).
        steps.queued(job_pk, step.delay + runner.IO_TASK_SECONDS)


@shared_task(name="jobs.cancel_leftovers", acks_late=True)
def cancel_leftovers(job_pk: int) -> None:
    """The pending rows of a cancelled job that its cancel request left (a very large job)."""
    services.cancel_rest(job_pk)


@shared_task(name="jobs.reap", bind=True)
def reap(self) -> None:
    # When this message was queued: every step queued before it has left the queue.
    reaper.reap(probe=steps.sent_at(self.request))


@shared_task(name="jobs.expire_jobs")
def expire_jobs() -> None:
    count = housekeeping.expire_jobs()
    if count:
        logger.info("expired %d jobs", count)
    # Two-step uploads never turned into a job go with the same hourly sweep.
    unused = uploads.expire_uploads()
    if unused:
        logger.info("expired %d unused uploads", unused)
    # And the empty folders of used ones, which releases before kept.
    uploads.remove_empty_folders()


@shared_task(name="jobs.give_back_space")
def give_back_space() -> None:
    """The embedded database's free pages given back to the file system, in short slices."""
    dbspace.give_back()
