"""A worker process freezes what its startup left alive, so the collector stops walking it while
a chunk's rows come and go (docs/performance.md: 1.33-1.44x the rows a second)."""

from __future__ import annotations

import gc

from celery.signals import worker_process_init

import batchhub.celery  # noqa: F401  (connects the signal handlers)


def test_a_pool_process_freezes_its_startup_objects():
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        worker_process_init.send(sender=None)
        assert gc.get_freeze_count() > 1000  # Django, Celery and the project's modules
    finally:
        gc.unfreeze()
