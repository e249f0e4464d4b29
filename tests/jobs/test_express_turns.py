"""A small I/O job is not queued behind a long one's turns: the task that reads it, from the
express queue, runs its first loop's first step (jobs/chunks.py, jobs/tasks.py), and an I/O step
gives its process up to a message waiting there within seconds, whatever its rows' time
(jobs/runner.py)."""

from __future__ import annotations

import threading

import pytest
from django.conf import settings

from jobs import chunks, runner, tasks
from jobs.ingest import loading
from jobs.models import Chunk, Job, JobStatus
from jobs.processors import base
from tests.conftest import drive, make_job, rows_text
from tests.jobs.test_io_overlap import ROWS, SlowCall, slow_call_job
from tests.jobs.test_recovery import assert_counters_valid

pytestmark = pytest.mark.django_db


@pytest.fixture
def one_chunk_job(alice, monkeypatch):
    """200 rows of 10 ms in one chunk, on four threads: 0.5 s."""
    return slow_call_job(alice, monkeypatch, ROWS // 4, 1)


@pytest.fixture
def quick_checks(monkeypatch):
    monkeypatch.setattr(runner, "TURN_CHECK_SECONDS", 0.05)
    monkeypatch.setattr(runner, "EXPRESS_TURN_SECONDS", 0.1)


def turned_mid_chunk(job: Job) -> None:
    job = Job.objects.get(pk=job.pk)
    assert 0 < job.succeeded < ROWS and job.running == 0
    assert_counters_valid(job)
    # The chunk, left mid-way, is free for the loop's next step.
    assert list(Chunk.objects.filter(job=job).values_list("done", "lease_until")) == [(False, None)]
    job = drive(job)
    assert (job.status, job.succeeded) == (JobStatus.COMPLETED, ROWS)


def test_a_message_in_the_express_queue_ends_a_long_step_whatever_its_rows_time(
    one_chunk_job, monkeypatch, quick_checks
):
    # A step of a service answering in 1 s turned only after 20 rows' time: a new job's read
    # waited for it behind both pool processes, then its first step behind the long job's.
    monkeypatch.setattr(runner, "TURN_ROW_TIMES", 10_000)
    monkeypatch.setattr(runner.enqueue, "waiting_express", lambda: (1, 0))
    step = runner.work_once(one_chunk_job.pk, seconds=0.1, io_seconds=30.0)
    assert step.action == "continue"
    turned_mid_chunk(one_chunk_job)


def test_other_steps_waiting_still_wait_for_the_steps_turn(
    one_chunk_job, monkeypatch, quick_checks
):
    monkeypatch.setattr(runner.enqueue, "waiting_express", lambda: (0, 5))
    assert runner.work_once(one_chunk_job.pk, seconds=0.1, io_seconds=30.0).action == "stop"
    job = Job.objects.get(pk=one_chunk_job.pk)
    assert (job.status, job.succeeded) == (JobStatus.COMPLETED, ROWS)


def test_a_head_step_gives_its_process_up_to_any_message_waiting(
    one_chunk_job, monkeypatch, quick_checks
):
    # It came through the express queue: ingests and deliveries wait behind it there.
    monkeypatch.setattr(runner, "TURN_ROW_TIMES", 10_000)
    monkeypatch.setattr(runner.enqueue, "waiting_express", lambda: (0, 1))
    step = runner.work_once(one_chunk_job.pk, seconds=0.1, io_seconds=0.1, head=True)
    assert step.action == "continue"
    turned_mid_chunk(one_chunk_job)


def sent_to_queues(monkeypatch) -> list[tuple[str, tuple, dict]]:
    """(queue, args, kwargs) of each jobs.work message sent from here on, recorded instead."""
    sent = []

    def apply_async(args=None, kwargs=None, queue=None, **_options):
        sent.append((queue or settings.CELERY_TASK_DEFAULT_QUEUE, tuple(args), kwargs or {}))

    monkeypatch.setattr(tasks.work, "apply_async", apply_async)
    monkeypatch.setattr(tasks.work, "delay", lambda *args: apply_async(args))
    return sent


# The read's commit starts the loops, within the task: a transaction of its own.
@pytest.mark.django_db(transaction=True)
def test_the_task_that_reads_a_small_io_job_runs_its_first_loops_first_step(alice, monkeypatch):
    sent = sent_to_queues(monkeypatch)
    monkeypatch.setitem(base.registry(), "slow-call", SlowCall)
    ran = []
    monkeypatch.setattr(
        runner, "work_once", lambda *a, **kw: ran.append((a, kw)) or runner.Step("continue")
    )
    job = make_job(alice, rows_text(40), processor="slow-call", concurrency=48)
    tasks.ingest_job(job.pk)
    job = Job.objects.get(pk=job.pk)
    generation, default = job.loop_generation, settings.CELERY_TASK_DEFAULT_QUEUE
    # Three loops of 16: the first one's step ran in the task, briefly, and its next step was
    # queued behind the other two loops'.
    assert ran == [
        (
            (job.pk,),
            {
                "seconds": runner.TASK_SECONDS,
                "io_seconds": runner.TASK_SECONDS,
                "generation": generation,
                "head": True,
            },
        )
    ]
    assert sent == [(default, (job.pk, generation), {})] * 3
    # (The step stamps its start as it reads the job, inside runner.work_once: test_step_trace.)


# The read's commit starts the loops, within the task: a transaction of its own.
@pytest.mark.django_db(transaction=True)
def test_a_small_io_jobs_first_step_runs_its_rows_and_ends_the_job(alice, monkeypatch):
    sent = sent_to_queues(monkeypatch)
    monkeypatch.setitem(base.registry(), "slow-call", SlowCall)
    SlowCall.began = {0: threading.Event()}
    job = make_job(alice, rows_text(1), processor="slow-call", concurrency=4)
    tasks.ingest_job(job.pk)
    job = Job.objects.get(pk=job.pk)
    assert (job.status, job.succeeded) == (JobStatus.COMPLETED, 1)
    assert sent == []  # its one loop needed no message


@pytest.mark.parametrize(
    "rows, processor", [(chunks.HEAD_START_ROWS + 1, "slow-call"), (40, "template")]
)
def test_a_large_io_job_and_a_cpu_job_queue_every_loop(
    alice, monkeypatch, django_capture_on_commit_callbacks, rows, processor
):
    # A CPU job's small first step is an extra step of the task that read it (runner.head_start).
    sent = sent_to_queues(monkeypatch)
    monkeypatch.setitem(base.registry(), "slow-call", SlowCall)
    job = make_job(alice, rows_text(rows), processor=processor, concurrency=16)
    with django_capture_on_commit_callbacks(execute=True):
        assert loading.ingest(job.pk) is None
    job = Job.objects.get(pk=job.pk)
    assert len(sent) == chunks.plan_for(job).loops and job.status == JobStatus.PROCESSING
