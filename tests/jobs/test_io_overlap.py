"""An I/O processor's loop starts the next chunk's rows while the current chunk's last rows are
in flight (jobs/chunk_loop.py): no idle threads at a chunk's end, every row still run once, every
chunk it took released, the counters exact, a pause seen across both chunks."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import OperationalError
from kombu.transport import memory
from redis.exceptions import ConnectionError as RedisConnectionError

from jobs import chunks, runner, services, syncpoint
from jobs.ingest import loading
from jobs.models import Chunk, Job, JobStatus, Row, RowStatus
from jobs.processors import Processor, base
from tests.conftest import drive, make_job, rows_text
from tests.jobs.test_recovery import assert_counters_valid

pytestmark = pytest.mark.django_db

ROWS, CHUNK = 200, 50


class SlowCall(Processor):
    """Stands in for a remote call: 10 ms a row. With `hold_last`, the last row of each chunk
    but the last also waits (5 s at most) for a row of the next chunk to begin: it can only
    begin meanwhile if the loop starts that chunk before this one's rows are all done."""

    name = "slow-call"
    inputs = ["name"]
    outputs = ["upper"]
    io_bound = True
    hold_last = False
    began: dict[int, threading.Event] = {}
    overlapped: list[bool] = []

    def process_row(self, row):
        chunk, place = divmod(row.index, CHUNK)
        SlowCall.began[chunk].set()
        time.sleep(0.01)
        if SlowCall.hold_last and place == CHUNK - 1 and chunk + 1 < ROWS // CHUNK:
            SlowCall.overlapped.append(SlowCall.began[chunk + 1].wait(5))
        return {"upper": row.inputs["name"].upper()}


def slow_call_job(alice, monkeypatch, rows_per_thread: int, chunk_count: int) -> Job:
    """ROWS rows of SlowCall on four threads, `rows_per_thread` of them a chunk's share."""
    SlowCall.hold_last, SlowCall.overlapped = False, []
    SlowCall.began = {chunk: threading.Event() for chunk in range(ROWS // CHUNK)}
    monkeypatch.setitem(base.registry(), "slow-call", SlowCall)
    monkeypatch.setattr(chunks, "IO_CHUNK_ROWS_PER_THREAD", rows_per_thread)
    job = make_job(alice, rows_text(ROWS), processor="slow-call", concurrency=4)
    loading.ingest(job.pk)
    assert Chunk.objects.filter(job=job).count() == chunk_count
    return job


@pytest.fixture
def io_job(alice, monkeypatch):
    return slow_call_job(alice, monkeypatch, 5, ROWS // CHUNK)  # chunks of 50 rows, the least


def test_one_loop_runs_the_chunks_back_to_back_with_no_idle_gap(io_job):
    SlowCall.hold_last = True
    # The step that finishes the last chunk ends the job.
    assert runner.work_once(io_job.pk, io_seconds=60).action == "stop"
    job = Job.objects.get(pk=io_job.pk)
    assert (job.succeeded, job.running, job.pending) == (ROWS, 0, 0)
    assert job.status == JobStatus.COMPLETED
    assert list(Chunk.objects.filter(job=job).values_list("done", "lease_until", "holder")) == [
        (True, None, "")
    ] * (ROWS // CHUNK)
    rows = Row.objects.filter(job=job).order_by("index")
    assert {(r.status, r.attempts) for r in rows} == {(RowStatus.SUCCEEDED, 1)}
    assert [r.output["upper"] for r in rows] == [f"PERSON{i}" for i in range(ROWS)]
    # At each chunk boundary a row of the next chunk began while the last row of the chunk
    # before was still running: the threads did not wait for the boundary.
    assert SlowCall.overlapped == [True] * (ROWS // CHUNK - 1)
    assert runner.work_once(io_job.pk).action == "stop"
    assert Job.objects.get(pk=io_job.pk).status == JobStatus.COMPLETED


def test_without_time_for_it_a_loop_takes_one_chunk(io_job):
    runner.work_once(io_job.pk)  # io_seconds=0: as the in-process tests drive jobs
    job = Job.objects.get(pk=io_job.pk)
    assert (job.succeeded, job.pending) == (CHUNK, ROWS - CHUNK)


def test_a_pause_while_two_chunks_are_held_stops_both_and_loses_nothing(io_job, monkeypatch):
    claims = {"n": 0}
    real_claim = runner.claim_chunk

    def claim(job_pk, generation=None):
        chunk = real_claim(job_pk, generation)
        claims["n"] += 1
        if claims["n"] == 2:  # the overlap's claim: chunk 1's last rows are in flight
            services.pause(Job.objects.get(pk=job_pk), actor="alice")
        return chunk

    monkeypatch.setattr(runner, "claim_chunk", claim)
    assert runner.work_once(io_job.pk, io_seconds=60).action == "stop"
    job = Job.objects.get(pk=io_job.pk)
    assert job.status == JobStatus.PAUSED and job.running == 0
    assert job.succeeded + job.pending == ROWS and job.succeeded >= CHUNK // 2
    rows = Row.objects.filter(job=job)
    assert rows.filter(status=RowStatus.RUNNING).count() == 0
    assert rows.filter(status=RowStatus.SUCCEEDED).count() == job.succeeded
    assert not Chunk.objects.filter(job=job, lease_until__isnull=False).exists()
    job = drive(services.resume(job, actor="alice"))
    assert job.status == JobStatus.COMPLETED and job.succeeded == ROWS
    assert set(Row.objects.filter(job=job).values_list("attempts", flat=True)) == {1}


@pytest.mark.django_db(transaction=True)  # the loop closes its connection, as after a restart
def test_a_loop_that_loses_the_database_with_two_chunks_gives_both_back(io_job, monkeypatch):
    monkeypatch.setattr(runner, "RECONNECT_SECONDS", 2.0)
    claims = {"n": 0}
    real_claim, real_write = runner.claim_chunk, syncpoint.write_rows

    def claim(job_pk, generation=None):
        claims["n"] += 1
        return real_claim(job_pk, generation)

    def write_rows(job_pk, done):
        if claims["n"] == 2:  # both chunks held: the first's last rows, the second's first
            claims["n"] += 1
            raise OperationalError("server closed the connection unexpectedly")
        return real_write(job_pk, done)

    monkeypatch.setattr(runner, "claim_chunk", claim)
    monkeypatch.setattr(syncpoint, "write_rows", write_rows)
    assert runner.work_once(io_job.pk, io_seconds=60).action == "continue"
    job = Job.objects.get(pk=io_job.pk)
    assert_counters_valid(job)
    assert job.running == 0 and not Row.objects.filter(job=job, status=RowStatus.RUNNING).exists()
    held = Chunk.objects.filter(job=job, seq__in=(0, 1))
    assert [(c.lease_until, c.holder) for c in held] == [(None, "")] * 2
    job = drive(job)
    assert job.status == JobStatus.COMPLETED and job.succeeded == ROWS
    # Rows finished but not committed when the connection went are done again, nothing twice.
    assert set(Row.objects.filter(job=job).values_list("attempts", flat=True)) <= {1, 2}


class Started(Processor):
    """50 ms a row; row 8 publishes the job as paused (what the web's pause publishes) as it
    begins, as if the person pressed Pause then; each row's start time is kept."""

    name = "started"
    inputs = ["name"]
    outputs = ["upper"]
    io_bound = True
    starts: dict[int, float] = {}
    paused_at: list[float] = []
    job: Job | None = None
    event_id = 0

    def process_row(self, row):
        Started.starts[row.index] = time.monotonic()
        if row.index == 8:
            from jobs import livestatus

            paused = Started.job
            paused.status = JobStatus.PAUSED
            livestatus.publish(paused, Started.event_id)
            Started.paused_at.append(time.monotonic())
        time.sleep(0.05)
        return {"upper": row.inputs["name"].upper()}


def test_no_row_starts_once_the_pause_is_published(alice, monkeypatch):
    # The loop learns of a pause at its next sync point; until then each thread that finished
    # a row started one queued behind it: requests made after Pause or Cancel was pressed.
    from jobs import chunk_loop

    monkeypatch.setattr(chunk_loop, "STOP_CHECK_SECONDS", 0.0)
    monkeypatch.setitem(base.registry(), "started", Started)
    Started.starts, Started.paused_at = {}, []
    job = make_job(alice, rows_text(40), processor="started", concurrency=4)
    loading.ingest(job.pk)
    Started.job = Job.objects.get(pk=job.pk)
    Started.event_id = job.events.order_by("-pk").values_list("pk", flat=True).first()
    runner.work_once(job.pk)
    (paused_at,) = Started.paused_at
    assert [i for i, at in Started.starts.items() if at > paused_at] == []
    # Nothing lost: what did not start is pending again, nothing is left running.
    job = Job.objects.get(pk=job.pk)
    assert job.running == 0 and job.succeeded == len(Started.starts)
    assert job.pending == 40 - len(Started.starts)


@pytest.fixture
def one_chunk_job(alice, monkeypatch):
    """The same rows in one chunk of 200 (0.5 s on four threads)."""
    return slow_call_job(alice, monkeypatch, ROWS // 4, 1)


@pytest.mark.parametrize(
    "why",
    ["a message waits", "the step ran its longest", "rows too slow to turn ran their longest"],
)
def test_a_long_step_gives_its_process_up_mid_chunk_and_loses_nothing(
    one_chunk_job, monkeypatch, why
):
    # A chunk of a slow service's rows took minutes: a new job's ingest, other jobs' steps and a
    # web request's webhook waited behind it for a pool process. Rows slow enough that 20 of
    # their times pass the step's longest run still end it there (the broker's visibility
    # timeout is past it).
    monkeypatch.setattr(runner, "TURN_CHECK_SECONDS", 0.05)
    monkeypatch.setattr(
        runner.enqueue, "waiting_express", lambda: (0, int(why == "a message waits"))
    )
    if why != "a message waits":
        monkeypatch.setattr(runner, "TURN_MAX_SECONDS", 0.2)
    if why.startswith("rows too slow"):
        monkeypatch.setattr(runner, "TURN_ROW_TIMES", 10_000)
    assert runner.work_once(one_chunk_job.pk, seconds=0.1, io_seconds=0.1).action == "continue"
    job = Job.objects.get(pk=one_chunk_job.pk)
    assert 0 < job.succeeded < ROWS and job.running == 0
    assert_counters_valid(job)
    rows = Row.objects.filter(job=job)
    assert not rows.filter(status=RowStatus.RUNNING).exists()
    assert set(rows.filter(status=RowStatus.PENDING).values_list("attempts", flat=True)) == {0}
    # The chunk, left mid-way, is free for the next step (its own or another loop's).
    assert list(Chunk.objects.filter(job=job).values_list("done", "lease_until")) == [(False, None)]

    job = drive(job)
    assert job.status == JobStatus.COMPLETED and job.succeeded == ROWS
    assert set(Row.objects.filter(job=job).values_list("attempts", flat=True)) == {1}


def test_with_nothing_waiting_a_step_keeps_its_chunk_to_the_end(one_chunk_job, monkeypatch):
    monkeypatch.setattr(runner, "TURN_CHECK_SECONDS", 0.05)
    monkeypatch.setattr(runner.enqueue, "waiting_express", lambda: (0, 0))
    assert runner.work_once(one_chunk_job.pk, seconds=0.1, io_seconds=0.1).action == "stop"
    job = Job.objects.get(pk=one_chunk_job.pk)
    assert (job.status, job.succeeded) == (JobStatus.COMPLETED, ROWS)


def test_a_broker_gone_while_a_step_asks_what_waits_costs_it_nothing(one_chunk_job, monkeypatch):
    # Redis restarting: redis-py's own error, raised mid-chunk, ended the step with its rows'
    # results unrecorded and its chunk held until the lease ran out.
    def away(*args, **kwargs):
        raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(runner, "TURN_CHECK_SECONDS", 0.05)
    monkeypatch.setattr(memory.Channel, "queue_declare", away)
    assert runner.work_once(one_chunk_job.pk, seconds=0.1, io_seconds=0.1).action == "stop"
    job = Job.objects.get(pk=one_chunk_job.pk)
    assert (job.succeeded, job.running, job.pending) == (ROWS, 0, 0)
    assert set(Row.objects.filter(job=job).values_list("attempts", flat=True)) == {1}


def test_a_step_with_a_row_waiting_for_its_retry_keeps_its_chunk(one_chunk_job, monkeypatch):
    # A chunk given back waits for its earliest retry (a 429's Retry-After): turning over would
    # have made every row not begun wait as long.
    real = SlowCall.process_row

    def process_row(self, row):
        if row.index == 0:
            raise base.RetryableError("429", retry_after=60, rate_limited=True)
        return real(self, row)

    monkeypatch.setattr(SlowCall, "process_row", process_row)
    monkeypatch.setattr(runner, "TURN_CHECK_SECONDS", 0.05)
    monkeypatch.setattr(runner.enqueue, "waiting_express", lambda: (0, 1))
    runner.work_once(one_chunk_job.pk, seconds=0.1, io_seconds=0.1)
    job = Job.objects.get(pk=one_chunk_job.pk)
    assert (job.succeeded, job.pending) == (ROWS - 1, 1)
