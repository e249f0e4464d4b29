"""A worker process freezes what its startup left alive, so the collector stops walking it while
a chunk's rows come and go (docs/performance.md: 1.33-1.44x the rows a second)."""

from __future__ import annotations

import gc

from celery.signals import worker_process_init

import batchhub.celery  # connects the signal handlers


def test_a_pool_process_freezes_its_startup_objects():
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    try:
        worker_process_init.send(sender=None)
        assert gc.get_freeze_count() > 1000  # Django, Celery and the project's modules
    finally:
        gc.unfreeze()


def test_a_pool_process_examines_young_objects_less_often():
    # A chunk's rows live for the whole chunk: at Python's default first threshold (700) the
    # collector walked each of them many times (docs/performance.md, "The collector's first
    # threshold raised in the worker").
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        worker_process_init.send(sender=None)
        assert gc.get_threshold() == batchhub.celery.GC_THRESHOLDS
        assert gc.get_threshold()[0] >= 10_000
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
