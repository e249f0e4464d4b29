"""The Celery task that runs webhook deliveries, and the threads it runs them on.

A delivery waits on a receiver, up to BATCHHUB_WEBHOOK_TIMEOUT an attempt (and a cancelled job's
event up to 30 s for its running rows first). Run in the task, it would hold a pool process that
the job loops need, and a few slow receivers would stall every job on the worker: the task hands
the delivery to a thread of its process and returns. The delivery's row is what makes it happen
(jobs/webhook_deliveries.py): a thread lost with its process, or a delivery left in a full
backlog, is sent again by the reaper.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor

from celery import shared_task
from celery.signals import worker_init, worker_process_shutdown
from django.conf import settings
from django.db import connections

from . import webhook_deliveries

logger = logging.getLogger(__name__)

# Deliveries queued in one process beyond its threads; past this, a message is dropped and its
# delivery, still due, is sent again by the reaper.
MAX_BACKLOG = 200


class Senders:
    """This process's delivery threads (BATCHHUB_WEBHOOK_THREADS of them; 0: in the task)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self.backlog = 0

    def submit(self, pk: int) -> bool:
        threads = settings.BATCHHUB_WEBHOOK_THREADS
        if not threads:
            webhook_deliveries.run(pk)
            return True
        with self._lock:
            if self.backlog >= MAX_BACKLOG:
                return False
            if self._executor is None:
                self._executor = ThreadPoolExecutor(threads, thread_name_prefix="webhook")
            self.backlog += 1
            self._executor.submit(self._run, pk)
        return True

    def _run(self, pk: int) -> None:
        try:
            webhook_deliveries.run(pk)
        except Exception:
            # The claim lapses and the reaper sends the delivery again.
            logger.exception("webhook delivery %s failed", pk)
        finally:
            connections.close_all()  # this thread's: a thread's connection is its own
            with self._lock:
                self.backlog -= 1

    def drain(self) -> None:
        """Let the attempts under way finish; those not started wait in their rows."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


senders = Senders()


def _start_here(pk: int) -> bool:
    # In a worker process, a job that ends starts its delivery on this process's threads rather
    # than behind the job steps queued ahead of a message; never in the task itself (0 threads).
    return bool(settings.BATCHHUB_WEBHOOK_THREADS) and senders.submit(pk)


@worker_init.connect
def _deliveries_start_here(**_kwargs) -> None:
    # In the worker's main process, before the pool forks: its processes inherit it.
    webhook_deliveries.start_here(_start_here)


@worker_process_shutdown.connect
def _finish_attempts(**_kwargs) -> None:
    # A warm shutdown stops a pool process once its task has returned: the attempt its threads
    # are making would be cut, and made again (a duplicate for the receiver) once its claim lapses.
    senders.drain()


@shared_task(name="jobs.deliver_webhook", acks_late=True)
def deliver_webhook(
    delivery_pk: int, *legacy, first_attempt_at: float | None = None, **_legacy_retry
) -> None:
    """Start the delivery's next attempt if it is due and nobody holds it (safe to run twice).

    A message from before delivery rows carried (job, event type, webhook id), and a retry's
    `first_attempt_at` (plus `waiting_since` and `waits`, of no use now): it becomes a row that
    goes on with the attempts and the 24 h window it had.
    """
    if legacy:
        delivery_pk = webhook_deliveries.adopt(delivery_pk, *legacy[:2], first_attempt_at)
        if delivery_pk is None:
            return
    senders.submit(delivery_pk)
