"""Queue a Celery task by its name, from the modules below jobs/tasks.py that defines it.

The task is looked up in the app's registry when sent (jobs/apps.py imports jobs.tasks at start,
which registers it), so `.delay` still honours CELERY_TASK_ALWAYS_EAGER and a test's patch of a
task's `delay`; `send_task` would honour neither. The engine never imports its entry points.

Every message sent here follows a committed change whose work the reaper also finds (a queued
job, a processing job without loops, a cancelled job's leftover rows, a due webhook delivery):
a broker that is down costs that work a delay, and the request that made the change answers
for the change, not with a 500 for a message the reaper will make up for.
"""

from __future__ import annotations

import logging
import time

from celery import current_app
from django.conf import settings
from kombu.exceptions import ChannelError, OperationalError

logger = logging.getLogger(__name__)


def send(name: str, *args) -> bool:
    """Queue the task; False when the broker refused it (logged)."""
    try:
        current_app.tasks[name].delay(*args)
    except OperationalError as exc:
        _unsent(name, args, exc)
        return False
    return True


def send_later(name: str, seconds: float, *args) -> None:
    try:
        current_app.tasks[name].apply_async(args, countdown=seconds)
    except OperationalError as exc:
        _unsent(name, args, exc)


def _unsent(name: str, args: tuple, exc: Exception) -> None:
    logger.warning(
        "broker unavailable, %s%r not sent; the reaper will pick it up (%s)", name, args, exc
    )


def start_ingest(job_pk: int) -> None:
    """Read the job's input on a worker (jobs.tasks.ingest_job)."""
    send("jobs.ingest", job_pk)


# After the broker could not say, a loop asks again only this much later: each try can wait for
# the broker's connect timeout, and the loop's sync points wait with it.
WAITING_RETRY_SECONDS = 30.0
_unanswered_until = 0.0


def waiting() -> int:
    """Messages waiting for a worker in the queues this process's worker takes from (0 when the
    broker cannot say): a long step gives its pool process up when something waits for it."""
    return queue_length() or 0


def waiting_express() -> tuple[int, int]:
    """The same messages as (in the express queue, in the others); (0, 0) when the broker cannot
    say. A long step gives its process up sooner to the express queue's: a new job's read or
    first step, a webhook delivery, each short, which a person waits for."""
    counts = _queue_counts()
    if counts is None:
        return 0, 0
    express = counts.pop(settings.BATCHHUB_EXPRESS_QUEUE, 0)
    return express, sum(counts.values())


def queue_length() -> int | None:
    """The same count, None when the broker cannot say: the reaper takes only a real 0 for an
    empty queue (a step still queued through a broker blip is not lost)."""
    counts = _queue_counts()
    return None if counts is None else sum(counts.values())


def _queue_counts() -> dict[str, int] | None:
    global _unanswered_until
    if time.monotonic() < _unanswered_until:
        return None
    names = set(current_app.amqp.queues.consume_from or [settings.CELERY_TASK_DEFAULT_QUEUE])
    names.add(settings.BATCHHUB_EXPRESS_QUEUE)  # every worker takes from it (batchhub/celery.py)
    counts = dict.fromkeys(names, 0)
    try:
        with current_app.pool.acquire(block=True, timeout=1.0) as conn:
            # One try: a job loop's own thread asks, and kombu's reconnecting would hold its
            # sync points (seconds a call) for as long as the broker is away.
            conn.ensure_connection(max_retries=0)
            channel = conn.default_channel
            for name in names:
                try:
                    counts[name] = channel.queue_declare(queue=name, passive=True).message_count
                except ChannelError:
                    pass  # never declared, or empty (Redis drops an empty list)
    except Exception as exc:
        # Whatever the broker raises (redis-py's own errors are neither kombu's nor OSError):
        # the answer is only a hint, and the step it would end has rows in flight.
        _unanswered_until = time.monotonic() + WAITING_RETRY_SECONDS
        logger.info("could not count the messages waiting (%s); asking again in 30 s", exc)
        return None
    return counts
