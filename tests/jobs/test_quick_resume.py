"""A resume that comes before the job's old loop has given its chunk back: the loops the resume
started find every chunk held and stop, so the loop that gives the chunk back sends a loop of
the new start for it, instead of leaving it to the reaper (seconds later)."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from jobs import chunks, enqueue, finish, runner, services
from jobs.ingest import loading
from jobs.models import Chunk, Job, JobStatus, Row, RowStatus
from jobs.processors import Processor, base
from tests.conftest import make_job, rows_text
from tests.processors.servers import holding_server

pytestmark = pytest.mark.django_db(transaction=True)

ROWS = 300


def recorded_steps(monkeypatch) -> list[tuple]:
    """The loop steps the engine queues from here on, recorded instead of sent."""
    steps: list[tuple] = []

    def send(name: str, *args) -> None:
        if name == "jobs.work":
            steps.append(args)

    monkeypatch.setattr(enqueue, "send", send)
    return steps


def run_steps(steps: list[tuple], job: Job, limit: int = 50) -> None:
    """Run the queued steps in turn, as a worker would, until none is left."""
    for _ in range(limit):
        if not steps:
            return
        job_pk, generation = steps.pop(0)
        step = runner.work_once(job_pk, seconds=runner.TASK_SECONDS, generation=generation)
        if step.action in ("continue", "wait"):
            steps.append((job_pk, generation))
    raise AssertionError("the job's steps never ended")


def assert_every_row_once(job: Job, rows: int) -> None:
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED
    assert job.counts == {
        "total": rows,
        "pending": 0,
        "running": 0,
        "succeeded": rows,
        "failed": 0,
        "cancelled": 0,
    }
    assert job.counts == {"total": rows, **finish.recount(job)}
    assert set(Row.objects.filter(job=job).values_list("status", "attempts")) == {
        (RowStatus.SUCCEEDED, 1)
    }


class PausedMidChunk(Processor):
    """Echoes the name; the job is paused while its first group runs."""

    name = "paused_mid_chunk_test"
    inputs = ["name"]
    outputs = ["echo"]
    job_pk: int = 0

    def process_row(self, row):
        if row.index == 10:
            services.pause(Job.objects.get(pk=PausedMidChunk.job_pk), actor="alice")
        return {"echo": row.inputs["name"]}


def test_a_chunk_given_back_after_a_quick_resume_gets_a_loop_at_once(alice, monkeypatch):
    monkeypatch.setitem(base.registry(), PausedMidChunk.name, PausedMidChunk)
    steps = recorded_steps(monkeypatch)
    job = make_job(alice, rows_text(ROWS), processor=PausedMidChunk.name, concurrency=1)
    PausedMidChunk.job_pk = job.pk
    loading.ingest(job.pk)
    ((_pk, first),) = steps
    steps.clear()
    real_release = runner.release_chunk
    resumed: list[runner.Step] = []

    def release_after_a_resume(run) -> None:
        # The old loop saw the pause at its sync point; before it gives its chunk back, the job
        # is resumed and the resume's loop looks for a chunk: the only one is still held.
        if not resumed:
            services.resume(Job.objects.get(pk=job.pk), actor="alice")
            ((_pk, generation),) = steps
            steps.clear()
            resumed.append(runner.work_once(job.pk, generation=generation))
        real_release(run)

    monkeypatch.setattr(runner, "release_chunk", release_after_a_resume)
    assert runner.work_once(job.pk, seconds=runner.TASK_SECONDS, generation=first).action == "stop"
    assert resumed == [runner.Step("stop")]  # every chunk was held: the new loop stopped
    job.refresh_from_db()
    assert job.status == JobStatus.PROCESSING
    assert 0 < job.succeeded < ROWS and job.pending == ROWS - job.succeeded

    # The chunk given back has a loop of the new start at once, not after the reaper's stall.
    assert [generation for _pk, generation in steps] == [Job.objects.get(pk=job.pk).loop_generation]
    monkeypatch.setattr(runner, "release_chunk", real_release)
    run_steps(steps, job)
    assert_every_row_once(job, ROWS)


HOLD = 20.0  # what the server makes a request wait when the test does not release it first
IO_ROWS, THREADS = 40, 4


@pytest.fixture
def held_io_job(alice, settings):
    if connection.vendor != "postgresql":
        pytest.skip("threads on one test database need PostgreSQL")
    settings.BATCHHUB_PROCESSOR_ALLOW_PRIVATE = "127.0.0.0/8"
    with holding_server(HOLD) as server:
        params = {"method": "GET", "url": server.url + "/hold?row={name}", "fields": {"ok": "ok"}}
        job = make_job(alice, rows_text(IO_ROWS), "http", params, concurrency=THREADS)
        yield job, server
        server.httpd.state["release"].set()


def wait_until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.postgres
def test_an_io_loop_that_saw_a_pause_lifted_meanwhile_hands_its_chunk_on(held_io_job, monkeypatch):
    job, server = held_io_job
    steps = recorded_steps(monkeypatch)
    # A small I/O job: its one loop is not queued, its first step is the reading task's to run.
    first = loading.ingest(job.pk)
    assert first is not None and steps == []
    began = time.monotonic()
    returned: list[runner.Step] = []

    def old_loop() -> None:
        try:
            returned.append(
                runner.work_once(
                    job.pk,
                    seconds=runner.TASK_SECONDS,
                    io_seconds=runner.IO_TASK_SECONDS,
                    generation=first,
                )
            )
        finally:
            connection.close()

    loop = threading.Thread(target=old_loop, daemon=True)
    loop.start()
    wait_until(lambda: len(server.requests) >= THREADS)
    services.pause(Job.objects.get(pk=job.pk), actor="alice")
    time.sleep(0.6)  # the loop sees the pause: no row starts after its requests in flight
    services.resume(Job.objects.get(pk=job.pk), actor="alice")
    ((_pk, generation),) = steps
    steps.clear()
    # The resume's loop looks at once: the job's only chunk is still held by the old loop.
    assert runner.work_once(job.pk, generation=generation) == runner.Step("stop")
    # The old step has run past its turn (it would not claim again), then its requests answer.
    time.sleep(max(0.0, runner.TASK_SECONDS + 0.2 - (time.monotonic() - began)))
    released = time.monotonic()
    server.httpd.state["release"].set()
    loop.join(10)
    assert len(returned) == 1
    fresh = Job.objects.get(pk=job.pk)
    assert fresh.status == JobStatus.PROCESSING
    assert (fresh.succeeded, fresh.running, fresh.pending) == (THREADS, 0, IO_ROWS - THREADS)

    # The old loop gave its chunk to a loop of the resume: the rest is done without the reaper.
    assert steps == [(job.pk, generation)]
    run_steps(steps, job)
    assert time.monotonic() - released < 5.0
    assert_every_row_once(job, IO_ROWS)
    assert len(server.requests) == IO_ROWS  # each row's request made once


def test_a_loop_is_woken_only_for_a_chunk_it_stopped_without(alice, monkeypatch):
    # Never more loops than the start had: a loop that gives a chunk back wakes one that
    # stopped finding every chunk held, and only that one, once.
    steps = recorded_steps(monkeypatch)
    job = make_job(alice, rows_text(ROWS), concurrency=2)
    loading.ingest(job.pk)
    generation = Job.objects.get(pk=job.pk).loop_generation
    steps.clear()
    held = []
    while (chunk := chunks.claim_chunk(job.pk)) is not None:
        held.append(chunk)
    assert len(held) > 1
    chunks.hand_on(job.pk)
    assert steps == []  # no loop stopped for want of a chunk: those at work come for it
    assert chunks.stand_by(job.pk, generation - 1)  # an older start's loop stops uncounted
    assert chunks.stand_by(job.pk, generation)
    assert Job.objects.get(pk=job.pk).idle_loops == 1
    chunks.hand_on(job.pk)
    assert steps == []  # every chunk still held: nothing to wake it for

    Chunk.objects.filter(pk=held[0].pk).update(lease_until=None, holder="")
    assert not chunks.stand_by(job.pk, generation)  # a chunk is free again: claim it instead
    chunks.hand_on(job.pk)
    chunks.hand_on(job.pk)
    assert steps == [(job.pk, generation)]
    assert Job.objects.get(pk=job.pk).idle_loops == 0


def test_loops_started_afresh_count_their_own_idle_loops(alice, monkeypatch):
    recorded_steps(monkeypatch)
    job = make_job(alice, rows_text(ROWS), concurrency=1)
    loading.ingest(job.pk)
    Job.objects.filter(pk=job.pk).update(idle_loops=3)
    services.pause(Job.objects.get(pk=job.pk), actor="alice")
    services.resume(Job.objects.get(pk=job.pk), actor="alice")
    assert Job.objects.get(pk=job.pk).idle_loops == 0


class ResumedMidChunk(Processor):
    """Echoes the name; the job is paused and resumed between two of its loop's sync points."""

    name = "resumed_mid_chunk_test"
    inputs = ["name"]
    outputs = ["echo"]
    job_pk: int = 0
    new_loop: list[runner.Step] = []

    def process_row(self, row):
        if row.index == 10:
            services.pause(Job.objects.get(pk=ResumedMidChunk.job_pk), actor="alice")
            services.resume(Job.objects.get(pk=ResumedMidChunk.job_pk), actor="alice")
            generation = Job.objects.get(pk=ResumedMidChunk.job_pk).loop_generation
            ResumedMidChunk.new_loop.append(
                runner.work_once(ResumedMidChunk.job_pk, generation=generation)
            )
        return {"echo": row.inputs["name"]}


def test_a_replaced_loop_that_does_the_last_rows_ends_the_job(alice, monkeypatch):
    monkeypatch.setitem(base.registry(), ResumedMidChunk.name, ResumedMidChunk)
    ResumedMidChunk.new_loop = []
    steps = recorded_steps(monkeypatch)
    job = make_job(alice, rows_text(ROWS), processor=ResumedMidChunk.name, concurrency=1)
    ResumedMidChunk.job_pk = job.pk
    loading.ingest(job.pk)
    ((_pk, first),) = steps
    steps.clear()
    # The old loop never sees the pause, and does the job's only chunk to its end.
    assert runner.work_once(job.pk, seconds=60, generation=first) == runner.Step("stop")
    assert ResumedMidChunk.new_loop == [runner.Step("stop")]  # its chunk was held
    # The resume's loop (run above) and no other: nothing was left to hand on.
    assert steps == [(job.pk, Job.objects.get(pk=job.pk).loop_generation)]
    assert_every_row_once(job, ROWS)


class CancelledMidChunk(Processor):
    """Echoes the name; the job is cancelled while its first group runs."""

    name = "cancelled_mid_chunk_test"
    inputs = ["name"]
    outputs = ["echo"]
    job_pk: int = 0

    def process_row(self, row):
        if row.index == 10:
            services.cancel(Job.objects.get(pk=CancelledMidChunk.job_pk), actor="alice")
        return {"echo": row.inputs["name"]}


def test_a_loop_a_cancel_stopped_hands_nothing_on_and_counts_no_rows(alice, monkeypatch):
    # Its chunks are all done at the cancel: a finalize would count the job's rows for nothing.
    monkeypatch.setitem(base.registry(), CancelledMidChunk.name, CancelledMidChunk)
    steps = recorded_steps(monkeypatch)
    job = make_job(alice, rows_text(ROWS), processor=CancelledMidChunk.name, concurrency=1)
    CancelledMidChunk.job_pk = job.pk
    loading.ingest(job.pk)
    ((_pk, first),) = steps
    steps.clear()
    counted = []
    monkeypatch.setattr(finish, "recount", lambda job: counted.append(job.pk) or {})
    assert runner.work_once(job.pk, seconds=60, generation=first) == runner.Step("stop")
    assert (steps, counted) == ([], [])
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert job.running == 0 and job.succeeded + job.cancelled == ROWS
