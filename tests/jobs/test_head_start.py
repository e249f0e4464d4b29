"""Work that need not wait for a turn on the workers: a job's first short step, run by the task
that read the job, and its end, by the step that finished its last chunk."""

from __future__ import annotations

import pytest

from jobs import runner, tasks
from jobs.ingest import loading
from jobs.models import Chunk, Job, JobStatus
from jobs.processors import Processor, base
from tests.conftest import drive, make_job, rows_text

pytestmark = pytest.mark.django_db


class Remote(Processor):
    """Stands in for a remote call: a step of its rows may take minutes."""

    name = "remote-standin"
    inputs = ["name"]
    outputs = ["upper"]
    io_bound = True

    def process_row(self, row):
        return {"upper": row.inputs["name"].upper()}


def test_a_small_cpu_job_is_done_by_the_task_that_reads_it(alice):
    # Its loops were queued behind every step queued before them: a 20-row job waited a minute
    # and more while other jobs ran. The loops are never run here (no commit in a test).
    job = make_job(alice, rows_text(20), concurrency=4)
    tasks.ingest_job(job.pk)
    job = Job.objects.get(pk=job.pk)
    assert (job.status, job.succeeded, job.running, job.pending) == (JobStatus.COMPLETED, 20, 0, 0)
    assert not Chunk.objects.filter(job=job, done=False).exists()


def test_a_cpu_job_s_head_start_is_one_step_and_its_loops_do_the_rest(alice, settings, monkeypatch):
    settings.BATCHHUB_CHUNK_ROWS = 50
    monkeypatch.setattr(runner, "TASK_SECONDS", 0.0)  # a step of one chunk
    job = make_job(alice, rows_text(runner.HEAD_START_ROWS), concurrency=1)
    tasks.ingest_job(job.pk)
    job = Job.objects.get(pk=job.pk)
    # The step ends within its time, on a chunk's boundary, and leaves no chunk held.
    assert (job.status, job.succeeded, job.running) == (JobStatus.PROCESSING, 50, 0)
    assert not Chunk.objects.filter(job=job, lease_until__isnull=False).exists()
    assert drive(job).succeeded == runner.HEAD_START_ROWS


def test_a_larger_cpu_job_waits_for_its_loops(alice):
    # A step stops only between chunks: a larger job's chunk of a slow processor would hold
    # the read's task (and the express queue behind it) for as long as the chunk takes.
    job = make_job(alice, rows_text(runner.HEAD_START_ROWS + 1), concurrency=1)
    tasks.ingest_job(job.pk)
    job = Job.objects.get(pk=job.pk)
    assert (job.status, job.succeeded) == (JobStatus.PROCESSING, 0)


def test_an_io_job_waits_for_its_loops(alice, monkeypatch):
    # An I/O step runs until it takes its turn (seconds to minutes): not in the read's task, whose
    # queue is the one for short work.
    monkeypatch.setitem(base.registry(), Remote.name, Remote)
    job = make_job(alice, rows_text(20), processor=Remote.name)
    tasks.ingest_job(job.pk)
    job = Job.objects.get(pk=job.pk)
    assert (job.status, job.succeeded, job.pending) == (JobStatus.PROCESSING, 0, 20)


def test_the_step_that_finishes_the_last_chunk_ends_the_job(alice, monkeypatch):
    # Its time up, the step queued a next one to find nothing and end the job: behind every step
    # queued meanwhile, a 100,000-row job said "processing" with every row done for 15 s.
    monkeypatch.setattr(runner, "TASK_SECONDS", 0.0)
    job = make_job(alice, rows_text(20), concurrency=1)
    loading.ingest(job.pk)
    step = runner.work_once(job.pk, seconds=0.0)
    job = Job.objects.get(pk=job.pk)
    assert (step.action, job.status, job.succeeded) == ("stop", JobStatus.COMPLETED, 20)
