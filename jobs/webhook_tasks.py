"""The Celery task that runs webhook deliveries, and the threads it runs them on.

A delivery waits on a receiver, up to BATCHHUB_WEBHOOK_TIMEOUT an attempt (and a cancelled job's
event up to 30 s for its running rows first). Run in the task, it would hold a pool process that
the job loops need, and a few slow receivers would stall every job on the worker: the task hands
the delivery to a thread of its process and returns. The delivery's row is what makes it happen
(jobs/webhook_deliveries.py): a thread lost with its process, or a delivery left in a full
backlog, is sent again by the reaper.

At most BATCHHUB_WEBHOOK_THREADS_PER_DESTINATION threads of a process wait on one destination
(scheme, host and port). Its other deliveries wait in the process, unclaimed, and a thread that
ends an attempt there takes the next one: a receiver that hangs holds that many threads, not all
of them, and the other receivers' events go out beside its deliveries.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter, deque
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
# Deliveries waiting in one process for a thread of their destination; past this, likewise.
MAX_WAITING = 1000


class Senders:
    """This process's delivery threads (BATCHHUB_WEBHOOK_THREADS of them; 0: in the task), at
    most BATCHHUB_WEBHOOK_THREADS_PER_DESTINATION of them on one destination."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self.backlog = 0
        self._busy: Counter[str] = Counter()  # threads on each destination
        self._waiting: dict[str, deque[int]] = {}  # deliveries waiting for one, in arrival order
        self._waiting_pks: set[int] = set()

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
            self._send(pk)
        except Exception:
            # The claim lapses and the reaper sends the delivery again.
            logger.exception("webhook delivery %s failed", pk)
        finally:
            connections.close_all()  # this thread's: a thread's connection is its own
            with self._lock:
                self.backlog -= 1

    def _send(self, pk: int) -> None:
        where = webhook_deliveries.destination(pk)
        if where is None:
            webhook_deliveries.run(pk)  # nothing to send: it ends without waiting on anyone
            return
        webhook_deliveries.settle(pk)  # on this thread, not on one of the destination's
        if not self._take(where, pk):
            return  # its turn comes when a thread on its destination is done
        next_pk: int | None = pk
        try:
            while next_pk is not None:
                try:
                    webhook_deliveries.run(next_pk)
                except Exception:
                    logger.exception("webhook delivery %s failed", next_pk)
                next_pk = self._pass_on(where)
        finally:
            if next_pk is not None:  # the thread is going: its destination must not lose it
                self._release(where)

    def _take(self, where: str, pk: int) -> bool:
        """A thread on `where` for this delivery; or it waits for one, in this process or (when
        too many wait, or the process is stopping) in its row, still due, for the reaper."""
        with self._lock:
            if self._executor is None:
                return False  # stopping: no new attempt that the stop would have to wait for
            if self._busy[where] < settings.BATCHHUB_WEBHOOK_THREADS_PER_DESTINATION:
                self._busy[where] += 1
                return True
            # A second message for a delivery that waits here changes nothing.
            if pk not in self._waiting_pks and len(self._waiting_pks) < MAX_WAITING:
                self._waiting.setdefault(where, deque()).append(pk)
                self._waiting_pks.add(pk)
            return False

    def _pass_on(self, where: str) -> int | None:
        """The next delivery waiting for `where`, which keeps this thread; or None, freeing it.
        One step under the lock: a delivery that starts waiting meanwhile would wait for good."""
        with self._lock:
            queue = self._waiting.get(where)
            if queue and self._executor is not None:
                pk = queue.popleft()
                self._waiting_pks.discard(pk)
                if not queue:
                    del self._waiting[where]
                return pk
            self._free(where)
            return None

    def _release(self, where: str) -> None:
        with self._lock:
            self._free(where)

    def _free(self, where: str) -> None:
        self._busy[where] -= 1
        if self._busy[where] <= 0:
            del self._busy[where]

    def drain(self) -> None:
        """Let the attempts under way finish; those not started wait in their rows."""
        with self._lock:
            executor, self._executor = self._executor, None
            self._waiting.clear()
            self._waiting_pks.clear()
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
