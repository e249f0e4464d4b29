"""Celery's prefork pool, noticing a dead pool process within half a second.

A pool process killed mid-task (by the kernel, an operator, or a row that crashes it) is
cleaned up, and its task sent back to the queue, when the pool next checks its processes. The
pool watches each process's exit, but that misses about one death in two here, and then only its
timer catches it, every 5 s. A row that kills its worker is isolated in a few deaths
(jobs/runner.py), so each one would cost those 5 s. Checking twice a second costs a waitpid per
process.
"""

from __future__ import annotations

from celery.concurrency import asynpool, prefork

MAINTAIN_SECONDS = 0.5


class AsynPool(asynpool.AsynPool):
    @property
    def timers(self):
        return {self.maintain_pool: MAINTAIN_SECONDS}


class TaskPool(prefork.TaskPool):
    Pool = AsynPool
