"""A cancel does not wait for an I/O job's requests in flight (jobs/chunk_loop.py): the loop and
its worker process are free at once, and the rows in a request stay running until their answer
comes back, when the thread that made it writes it (API.md: rows already running finish and keep
their results). A pause still waits for them.

Real threads and a real HTTP server on 127.0.0.1 that holds each request until released (or
HOLD seconds); the cancel comes from another thread, as from a web request."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest
from django.conf import settings as django_settings
from django.db import OperationalError, connection
from django.utils import timezone

from jobs import (
    chunk_loop,
    finish,
    holders,
    reaper,
    runner,
    services,
    syncpoint,
    webhook_deliveries,
)
from jobs.ingest import loading
from jobs.models import Chunk, Job, JobStatus, Row, RowStatus
from jobs.processors.http_api import HTTPProcessor
from tests.conftest import make_job, rows_text
from tests.processors.servers import holding_server

# Several threads on one database: PostgreSQL (SQLite's shared in-memory test database has no
# busy wait between connections).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

HOLD = 20.0  # what the server makes a request wait when the test does not release it first
ROWS, THREADS = 40, 4


@pytest.fixture
def server():
    if connection.vendor != "postgresql":
        pytest.skip("threads on one test database need PostgreSQL")
    with holding_server(HOLD) as s:
        yield s
        s.httpd.state["release"].set()


@pytest.fixture
def held_job(alice, server, settings):
    settings.BATCHHUB_PROCESSOR_ALLOW_PRIVATE = "127.0.0.0/8"
    params = {
        "method": "GET",
        "url": server.url + "/hold?row={name}",
        "fields": {"ok": "ok"},
        "timeout": 60,
    }
    job = make_job(alice, rows_text(ROWS), "http", params, concurrency=THREADS)
    loading.ingest(job.pk)
    return Job.objects.get(pk=job.pk)


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def in_another_thread(action: Callable[[], None]) -> threading.Thread:
    """Run `action` beside the loop, as a web request would, on its own connection."""

    def run() -> None:
        try:
            action()
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def every_thread_held(server) -> None:
    wait_until(lambda: len(server.requests) >= THREADS)
    time.sleep(0.3)  # the loop is waiting on them now


def control(job: Job, action: str, at: list[float]) -> None:
    at.append(time.monotonic())
    getattr(services, action)(Job.objects.get(pk=job.pk), actor="alice")


def rows_now(job: Job) -> list[tuple]:
    return list(
        Row.objects.filter(job=job).order_by("index").values_list("status", "output", "attempts")
    )


def loop_threads_ended(job: Job) -> None:
    wait_until(
        lambda: not [t for t in threading.enumerate() if t.name.startswith(f"job-{job.pk}_")]
    )


def assert_final(job: Job, *, kept: int = THREADS) -> None:
    """The rows in a request at the cancel kept their answers; no other row started."""
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert (job.running, job.pending, job.failed) == (0, 0, 0)
    assert (job.succeeded, job.cancelled) == (kept, ROWS - kept)
    assert job.counts == {"total": ROWS, **finish.recount(job)}  # each row counted once
    rows = rows_now(job)
    assert [output for status, output, _a in rows if status == RowStatus.SUCCEEDED] == [
        {"ok": True}
    ] * kept
    assert all(output is None for status, output, _a in rows if status == RowStatus.CANCELLED)
    # The rows whose requests were made count one attempt; nothing else started.
    assert sorted(attempts for _s, _o, attempts in rows) == [0] * (ROWS - THREADS) + [1] * THREADS


def answered(job: Job, server) -> None:
    server.httpd.state["release"].set()
    wait_until(lambda: server.httpd.state["answered"] == THREADS)
    loop_threads_ended(job)  # the threads left behind end with their row written


def cancelled_mid_request(job: Job, server, action: str = "cancel") -> float:
    """Cancel (or delete) while every thread waits on a request; the seconds the loop took to
    return."""
    at: list[float] = []

    def cancel() -> None:
        every_thread_held(server)
        control(job, action, at)

    canceller = in_another_thread(cancel)
    step = runner.work_once(job.pk, io_seconds=60)
    returned = time.monotonic() - at[0]
    canceller.join(5)
    assert step.action == "stop"
    return returned


def test_a_cancel_frees_the_loop_at_once_and_the_rows_in_flight_keep_their_answers(
    held_job, server
):
    returned = cancelled_mid_request(held_job, server)
    # Free within a second or two, not when the requests come back.
    assert returned < 2.0, f"the loop returned {returned:.1f} s after the cancel"
    job = Job.objects.get(pk=held_job.pk)
    assert job.status == JobStatus.CANCELLED
    # Still in a request: running, as API.md says, until the answers come back.
    assert (job.running, job.succeeded, job.cancelled) == (THREADS, 0, ROWS - THREADS)
    assert sum(status == RowStatus.RUNNING for status, _o, _a in rows_now(job)) == THREADS
    # The job.cancelled event waits for them, so that its counts are final.
    assert webhook_deliveries.settle_delay(job.pk, "job.cancelled", time.time()) is not None

    answered(held_job, server)
    assert_final(held_job)
    assert webhook_deliveries.settle_delay(job.pk, "job.cancelled", time.time()) is None
    assert len(server.requests) == THREADS  # no request was made after the cancel


def test_an_answer_that_comes_back_while_its_row_is_handed_over_is_written_once(
    held_job, server, monkeypatch
):
    real = syncpoint.ChunkRun.hand_over

    def hand_over(self):
        # The requests answer between the loop's decision to hand their rows over and the
        # commit: the loop collects them itself.
        server.httpd.state["release"].set()
        wait_until(lambda: server.httpd.state["answered"] == THREADS)
        time.sleep(0.2)
        return real(self)

    monkeypatch.setattr(syncpoint.ChunkRun, "hand_over", hand_over)
    cancelled_mid_request(held_job, server)
    loop_threads_ended(held_job)
    assert_final(held_job)


def test_the_reaper_leaves_rows_in_a_request_alone_until_their_process_is_gone(held_job, server):
    cancelled_mid_request(held_job, server)
    past_lease = timezone.now() + timedelta(seconds=django_settings.BATCHHUB_LEASE_SECONDS + 5)
    reaper.reap(now=past_lease)
    assert Job.objects.get(pk=held_job.pk).running == THREADS  # their threads still write them

    # A worker process killed while its threads wait: nothing will write these rows.
    gone = (
        f"{holders.machine()}{holders.SEPARATOR}999999999{holders.SEPARATOR}1{holders.SEPARATOR}1"
    )
    assert holders.is_gone(gone)
    Chunk.objects.filter(job_id=held_job.pk, lease_until__isnull=False).update(holder=gone)
    reaper.reap(now=past_lease)
    job = Job.objects.get(pk=held_job.pk)
    assert (job.running, job.succeeded, job.cancelled) == (0, 0, ROWS)

    # The answers that still come back find their rows ended: none is written or counted twice.
    answered(held_job, server)
    job.refresh_from_db()
    assert (job.running, job.succeeded, job.cancelled) == (0, 0, ROWS)
    assert job.counts == {"total": ROWS, **finish.recount(job)}


def test_a_pause_waits_for_the_rows_in_flight_and_a_cancel_then_frees_the_loop(held_job, server):
    at: list[float] = []
    waited: list[int] = []

    def pause_then_cancel() -> None:
        every_thread_held(server)
        control(held_job, "pause", at)
        time.sleep(2.0)
        # Paused, the loop still waits for its requests: their rows are still running.
        waited.append(Job.objects.get(pk=held_job.pk).running)
        control(held_job, "cancel", at)

    controller = in_another_thread(pause_then_cancel)
    runner.work_once(held_job.pk, io_seconds=60)
    returned = time.monotonic() - at[-1]
    controller.join(5)
    assert len(at) == 2, "the loop returned before the cancel"
    assert waited[0] >= THREADS  # its rows in requests and those queued behind them
    assert returned < 2.0, f"the loop returned {returned:.1f} s after the cancel"
    answered(held_job, server)
    assert_final(held_job)


def test_a_pause_alone_keeps_the_answers_of_the_rows_in_flight(held_job, server):
    # The rows queued behind the requests do not start when the threads come back together.
    def pause_then_release() -> None:
        every_thread_held(server)
        control(held_job, "pause", [])
        time.sleep(1.0)
        server.httpd.state["release"].set()

    controller = in_another_thread(pause_then_release)
    assert runner.work_once(held_job.pk, io_seconds=60).action == "stop"
    controller.join(5)
    job = Job.objects.get(pk=held_job.pk)
    assert job.status == JobStatus.PAUSED
    assert (job.running, job.succeeded, job.pending) == (0, THREADS, ROWS - THREADS)
    assert job.counts == {"total": ROWS, **finish.recount(job)}
    assert Row.objects.filter(job=job, status=RowStatus.SUCCEEDED, output={"ok": True}).count() == (
        THREADS
    )


def test_deleting_a_job_with_rows_in_flight_frees_its_loop_at_once(held_job, server):
    returned = cancelled_mid_request(held_job, server, "delete")
    assert returned < 2.0, f"the loop returned {returned:.1f} s after the delete"
    # The answers that come back later have no row to land on, and bring none back.
    answered(held_job, server)
    assert not Job.objects.filter(pk=held_job.pk).exists()
    assert not Row.objects.filter(job_id=held_job.pk).exists()
    assert len(server.requests) == THREADS


def test_a_call_that_raises_after_the_cancel_ends_its_row_failed(held_job, server, monkeypatch):
    # The connection reset (or the processor's bug) reaches the thread instead of a result: the
    # row ended running until the reaper's cleanup, minutes later, and then cancelled.
    real = HTTPProcessor.run_one

    def run_one(self, row):
        real(self, row)
        raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setattr(HTTPProcessor, "run_one", run_one)
    cancelled_mid_request(held_job, server)
    released = time.monotonic()
    answered(held_job, server)
    assert time.monotonic() - released < 5.0
    job = Job.objects.get(pk=held_job.pk)
    assert job.status == JobStatus.CANCELLED
    assert (job.running, job.succeeded, job.failed, job.cancelled) == (
        0,
        0,
        THREADS,
        ROWS - THREADS,
    )
    assert job.counts == {"total": ROWS, **finish.recount(job)}
    failed = Row.objects.filter(job=job, status=RowStatus.FAILED)
    assert {(r.error, r.reason) for r in failed} == {
        ("ConnectionResetError: [Errno 104] Connection reset by peer",) * 2
    }


def test_a_late_answer_is_kept_through_a_database_blip(held_job, server, monkeypatch):
    monkeypatch.setattr(chunk_loop, "LATE_RETRY_SECONDS", 0.1, raising=False)
    real = syncpoint.ChunkRun.write_late
    tries: dict[int, int] = {}

    def write_late(self, item, result):
        tries[item.index] = tries.get(item.index, 0) + 1
        if tries[item.index] <= 2:  # the database is away for each row's first two tries
            raise OperationalError("server closed the connection unexpectedly")
        return real(self, item, result)

    monkeypatch.setattr(syncpoint.ChunkRun, "write_late", write_late)
    cancelled_mid_request(held_job, server)
    released = time.monotonic()
    answered(held_job, server)
    assert time.monotonic() - released < 5.0
    assert_final(held_job)  # the answers were kept, each row counted once
    assert sorted(tries.values()) == [3] * THREADS


def test_a_row_whose_limiter_fails_after_the_cancel_ends_cancelled(
    alice, server, settings, monkeypatch
):
    # A thread waiting for the job's rate limit when the cancel came, whose limiter then fails
    # (the cache away): no request was made, and the row never ended (nor did the step's
    # processor close, waiting for that thread's call to come back).
    settings.BATCHHUB_PROCESSOR_ALLOW_PRIVATE = "127.0.0.0/8"
    params = {"method": "GET", "url": server.url + "/hold?row={name}", "fields": {"ok": "ok"}}
    job = make_job(alice, rows_text(ROWS), "http", params, concurrency=THREADS, rate_limit=6000)
    loading.ingest(job.pk)
    gate, asked = threading.Event(), []

    def acquire(key, rate, timeout):
        asked.append(key)
        if len(asked) >= THREADS:
            gate.wait(10)
            raise ConnectionError("the cache is away")

    monkeypatch.setattr(chunk_loop, "acquire", acquire)
    at: list[float] = []

    def cancel() -> None:
        wait_until(lambda: len(server.requests) >= THREADS - 1 and len(asked) >= THREADS)
        time.sleep(0.3)
        control(job, "cancel", at)

    canceller = in_another_thread(cancel)
    assert runner.work_once(job.pk, io_seconds=60).action == "stop"
    canceller.join(5)
    assert Job.objects.get(pk=job.pk).running == THREADS
    gate.set()
    answered_rows = THREADS - 1
    server.httpd.state["release"].set()
    wait_until(lambda: server.httpd.state["answered"] == answered_rows)
    loop_threads_ended(job)
    job.refresh_from_db()
    assert (job.status, job.running, job.pending) == (JobStatus.CANCELLED, 0, 0)
    assert (job.succeeded, job.cancelled) == (answered_rows, ROWS - answered_rows)
    assert job.counts == {"total": ROWS, **finish.recount(job)}
    assert len(server.requests) == answered_rows
