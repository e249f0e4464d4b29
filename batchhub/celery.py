from __future__ import annotations

import gc
import logging
import os
import signal

from celery import Celery
from celery.signals import (
    before_task_publish,
    celeryd_after_setup,
    import_modules,
    worker_init,
    worker_process_init,
)

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "batchhub.settings")


@import_modules.connect
def _check_database_file(**_kwargs) -> None:
    # Connected before the app exists, so that it runs before Celery's Django fix-up, whose model
    # checks open the SQLite file and would end a worker or beat on an unusable one with a
    # traceback instead of this one line.
    from .dbfile import refuse_unusable_database

    refuse_unusable_database()


app = Celery("batchhub")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# The collector's first generation is examined every GC_THRESHOLDS[0] new container objects. A
# chunk's rows live for the whole chunk, so at Python's default (700) each is examined many times
# on its way to the oldest generation; per-row objects that die young are freed by reference
# counting, and cycles are rare here.
GC_THRESHOLDS = (50_000, 20, 10)


def settle_collector() -> None:
    """Freeze what the process holds now and examine young objects less often.

    A full collection walks every object the process holds: without the freeze, the modules and
    Django's state are walked again and again as a chunk's rows are created and dropped.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


# The header the reaper's message (jobs.reap) carries with the database's time when it was sent
# (jobs/steps.py reads it).
SENT_HEADER = "batchhub_sent_at"
REAP_TASK = "jobs.reap"


@before_task_publish.connect
def _stamp_sent_time(sender=None, headers=None, **_kwargs) -> None:
    # The database's clock, not beat's: the job steps it is compared with are stamped with it.
    # A database beat cannot reach leaves the message unstamped (the reaper's older rule).
    if sender != REAP_TASK or headers is None or SENT_HEADER in headers:
        return
    try:
        from django.db import connection

        from .dbclock import now

        if not connection.in_atomic_block:  # beat's long-lived connection, as after a request
            connection.close_if_unusable_or_obsolete()
        headers[SENT_HEADER] = now().timestamp()
    except Exception as exc:
        logging.getLogger(__name__).warning("reaper message sent without its time (%s)", exc)


@celeryd_after_setup.connect
def _consume_express(sender, instance, **_kwargs) -> None:
    # Whatever -Q the operator gave (settings: CELERY_TASK_ROUTES): ingests and webhook
    # deliveries wait in the express queue until a worker takes them.
    from django.conf import settings

    instance.app.amqp.queues.select_add(settings.BATCHHUB_EXPRESS_QUEUE)


@worker_init.connect
def _lower_priority(**_kwargs) -> None:
    # In the main process, before the pool is forked: the pool processes inherit the priority.
    from django.conf import settings

    from .priority import lower_priority

    lower_priority(settings.BATCHHUB_WORKER_NICE)
    patient_sqlite(settings.DATABASES)
    # Before the pool forks: what startup left alive is never garbage, and pool processes share
    # its pages instead of copying them when the collector would touch them. Pools that run
    # tasks in this process (solo, threads) never send worker_process_init.
    settle_collector()


# What a database says when it will never let this worker in, whatever the wait: wrong
# credentials or names. Anything else (refused, timed out) may pass, and tasks wait for it.
REFUSED_FOR_GOOD = (
    "password authentication failed",
    "does not exist",
    "no pg_hba.conf entry",
    "unable to open database file",
)


@worker_init.connect
def _check_database(**_kwargs) -> None:
    # A worker with a wrong password said "ready", took tasks and reported each one succeeded
    # after 30 s of reconnecting: the operator saw nothing wrong but jobs that never moved.
    from django.db import OperationalError, connection

    try:
        connection.ensure_connection()
    except OperationalError as exc:
        text = str(exc)
        if any(reason in text for reason in REFUSED_FOR_GOOD):
            raise SystemExit(f"The worker cannot use the database (DATABASE_URL): {text}") from None
        logging.getLogger(__name__).warning(
            "The database is not reachable yet (%s); tasks wait for it.", text.strip()
        )
    finally:
        connection.close()  # not carried into the pool processes by the fork


@worker_process_init.connect
def _freeze_startup_objects(**_kwargs) -> None:
    # What a pool process loaded after the fork, frozen too.
    settle_collector()


@worker_process_init.connect
def _outlive_a_group_sigterm(**_kwargs) -> None:
    # A stop signals the worker's whole process group (honcho, systemd's default kill mode):
    # a pool process killed by it mid-task leaves its rows in flight to be taken over as after a
    # crash, each counting the stop as an attempt. Celery's children already ignore SIGINT for
    # the same reason; the main process's warm shutdown lets the task end, then stops the pool
    # (a cold one, or a kill, still ends them with SIGKILL).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


# A worker waits this long for SQLite's write lock: giving up fails a task mid-chunk, which costs
# far more than waiting, while a web request gives up sooner and answers 503.
WORKER_SQLITE_TIMEOUT = 30.0


def patient_sqlite(databases: dict) -> None:
    """Before any connection is opened in the worker: a longer busy timeout on SQLite."""
    for db in databases.values():
        if db["ENGINE"].endswith("sqlite3"):
            options = db.setdefault("OPTIONS", {})
            options["timeout"] = max(float(options.get("timeout", 5)), WORKER_SQLITE_TIMEOUT)
