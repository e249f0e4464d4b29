"""A cancel does not wait for an I/O job's requests in flight (jobs/chunk_loop.py): their rows
end as cancelled at once, the loop and its worker process are free, and the answers that come
back later are never written. A pause still waits for them (a dropped row would be run again).

Real threads and a real HTTP server on 127.0.0.1 that holds each request until released (or
HOLD seconds); the cancel comes from another thread, as from a web request."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from django.db import connection

from jobs import finish, runner, services, syncpoint, webhook_deliveries
from jobs.ingest import loading
from jobs.models import Job, JobStatus, Row, RowStatus
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


def assert_all_cancelled(job: Job) -> None:
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert (job.running, job.pending, job.succeeded, job.cancelled) == (0, 0, 0, ROWS)
    assert job.counts == {"total": ROWS, **finish.recount(job)}
    rows = rows_now(job)
    assert {status for status, _output, _attempts in rows} == {RowStatus.CANCELLED}
    assert all(output is None for _status, output, _attempts in rows)
    # The rows whose requests were made count one attempt; nothing else started.
    assert sorted(attempts for _s, _o, attempts in rows) == [0] * (ROWS - THREADS) + [1] * THREADS


def test_a_cancel_ends_the_rows_in_flight_at_once_and_drops_their_late_answers(held_job, server):
    at: list[float] = []

    def cancel() -> None:
        every_thread_held(server)
        control(held_job, "cancel", at)

    canceller = in_another_thread(cancel)
    step = runner.work_once(held_job.pk, io_seconds=60)
    returned = time.monotonic() - at[0]
    canceller.join(5)
    assert step.action == "stop"
    # Free within a second or two, not when the requests come back.
    assert returned < 3.0, f"the loop returned {returned:.1f} s after the cancel"
    assert_all_cancelled(held_job)
    # The job.cancelled event has no running rows to wait for: it goes at once.
    assert webhook_deliveries.settle_delay(held_job.pk, "job.cancelled", time.time()) is None

    before = rows_now(held_job)
    server.httpd.state["release"].set()
    wait_until(lambda: server.httpd.state["answered"] == THREADS)
    loop_threads_ended(held_job)  # the threads left behind end with their request
    assert rows_now(held_job) == before
    assert_all_cancelled(held_job)
    assert len(server.requests) == THREADS  # no request was made after the cancel


def test_an_answer_that_comes_back_while_its_row_is_dropped_is_not_written(
    held_job, server, monkeypatch
):
    real = syncpoint.ChunkRun.drop_in_flight

    def drop_in_flight(self, in_flight):
        # The requests answer between the loop's decision to drop their rows and the commit.
        server.httpd.state["release"].set()
        wait_until(lambda: server.httpd.state["answered"] == THREADS)
        time.sleep(0.2)
        return real(self, in_flight)

    monkeypatch.setattr(syncpoint.ChunkRun, "drop_in_flight", drop_in_flight)
    canceller = in_another_thread(
        lambda: (every_thread_held(server), control(held_job, "cancel", []))
    )
    runner.work_once(held_job.pk, io_seconds=60)
    canceller.join(5)
    loop_threads_ended(held_job)
    assert_all_cancelled(held_job)


def test_a_pause_waits_for_the_rows_in_flight_and_a_cancel_then_drops_them(held_job, server):
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
    assert returned < 3.0, f"the loop returned {returned:.1f} s after the cancel"
    server.httpd.state["release"].set()
    wait_until(lambda: server.httpd.state["answered"] == THREADS)
    loop_threads_ended(held_job)
    assert_all_cancelled(held_job)


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
    at: list[float] = []

    def delete() -> None:
        every_thread_held(server)
        control(held_job, "delete", at)

    deleter = in_another_thread(delete)
    step = runner.work_once(held_job.pk, io_seconds=60)
    returned = time.monotonic() - at[0]
    deleter.join(5)
    assert step.action == "stop"
    assert returned < 3.0, f"the loop returned {returned:.1f} s after the delete"
    server.httpd.state["release"].set()
    wait_until(lambda: server.httpd.state["answered"] == THREADS)
    loop_threads_ended(held_job)
    assert not Job.objects.filter(pk=held_job.pk).exists()
    assert not Row.objects.filter(job_id=held_job.pk).exists()
