"""A real worker says which job steps it holds past the queue (jobs/held.py): a delayed step
due while its one pool process runs another job's long step."""

from __future__ import annotations

import time

import pytest
from celery import current_app

from jobs import enqueue, held, runner
from jobs.models import Chunk
from jobs.processors import base
from tests.conftest import make_job, rows_text
from tests.e2e.test_io_jobs import finished
from tests.support.fault_processors import CrashProcessor
from tests.support.worker import wait_for

pytestmark = pytest.mark.e2e

DUE = 10  # seconds until the delayed step is due


# Timed around a real pool (about 25 s, and the busy step must outlast the delayed one's due
# time): for BATCHHUB_SLOW=1. tests/jobs/test_held_steps.py covers the reaper's use of the answer.
@pytest.mark.slow
def test_a_worker_says_which_due_step_it_holds_while_its_pool_is_busy(
    alice, worker_factory, monkeypatch
):
    monkeypatch.setitem(base.registry(), CrashProcessor.name, CrashProcessor)
    worker_factory(concurrency=1)
    # A delayed step of another job (none: it stops at once when it runs): the worker, idle,
    # takes it from the queue at once and keeps it until due.
    step = (10**6, 7)
    sent = time.monotonic()
    current_app.tasks["jobs.work"].apply_async(step, countdown=DUE)
    wait_for(lambda: enqueue.queue_length() == 0, timeout=10, message="the step to be taken")
    # One loop's one chunk of rows of 8 ms (too many for a head start in the ingest's task, which
    # its creation queues): its step holds the only pool process for about 16 s, from before the
    # delayed step is due to past it.
    rows = 2 * runner.HEAD_START_ROWS + 1
    busy = make_job(
        alice, rows_text(rows), processor="crash_test", params={"delay": 0.008}, concurrency=1
    )
    wait_for(
        lambda: Chunk.objects.filter(job=busy).exclude(holder="").exists(),
        timeout=DUE - 1,
        message="the busy step to claim its chunk before the delayed one is due",
    )
    assert step in held.held()  # not due yet
    time.sleep(max(0.0, sent + DUE + 1.5 - time.monotonic()))
    now_held = held.held()
    assert step in now_held
    assert all(pk != busy.pk for pk, _ in now_held)  # the step that runs is not held
    finished(busy, timeout=60)
    wait_for(lambda: step not in held.held(), timeout=10, message="the held step to run")
