"""Queue a Celery task by its name, from the modules below jobs/tasks.py that defines it.

The task is looked up in the app's registry when sent (jobs/apps.py imports jobs.tasks at start,
which registers it), so `.delay` still honours CELERY_TASK_ALWAYS_EAGER and a test's patch of a
task's `delay`; `send_task` would honour neither. The engine never imports its entry points.
"""

from __future__ import annotations

from celery import current_app


def send(name: str, *args) -> None:
    current_app.tasks[name].delay(*args)


def send_later(name: str, seconds: float, *args) -> None:
    current_app.tasks[name].apply_async(args, countdown=seconds)


def start_ingest(job_pk: int) -> None:
    """Read the job's input on a worker (jobs.tasks.ingest_job)."""
    send("jobs.ingest", job_pk)
