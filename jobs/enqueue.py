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

from celery import current_app
from kombu.exceptions import OperationalError

logger = logging.getLogger(__name__)


def send(name: str, *args) -> None:
    try:
        current_app.tasks[name].delay(*args)
    except OperationalError as exc:
        _unsent(name, args, exc)


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
