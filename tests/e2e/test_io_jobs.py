"""I/O-bound jobs, real workers, local HTTP servers: concurrency, rate limit, auto-pause."""

from __future__ import annotations

import csv
import io
import time
from collections import Counter

import pytest

from jobs import finish, results, services
from jobs.models import Job, JobEvent, JobStatus
from tests.conftest import make_job
from tests.processors.servers import EchoHandler, LocalServer, holding_server
from tests.support.worker import wait_for

pytestmark = pytest.mark.e2e


class CountingHandler(EchoHandler):
    """/latency with a count of requests in flight; /throttled answers 429 until a set time."""

    def _any(self) -> None:
        state = self.state
        if self.path.startswith("/throttled"):
            self._record(self._read_body())
            if time.time() < state["throttle_until"]:
                self.send(429, {"error": "slow down"}, headers={"Retry-After": "1"})
            else:
                self.send(200, {"ok": True})
            return
        with state["lock"]:
            state["inflight"] += 1
            state["max_inflight"] = max(state["max_inflight"], state["inflight"])
        try:
            super()._any()
        finally:
            with state["lock"]:
                state["inflight"] -= 1

    do_GET = do_POST = _any  # noqa: N815


@pytest.fixture
def server():
    with LocalServer(
        CountingHandler, inflight=0, max_inflight=0, latency=0.05, throttle_until=0.0
    ) as s:
        yield s


def csv_of(n: int) -> str:
    return "name\n" + "".join(f"n{i}\n" for i in range(n))


def finished(job: Job, timeout: float = 120) -> Job:
    return wait_for(
        lambda: (j := Job.objects.get(pk=job.pk)).is_terminal and j,
        timeout=timeout,
        message=f"job {job.public_id} to finish",
    )


def http_params(url: str) -> dict:
    return {"method": "GET", "url": url + "?row={name}", "fields": {"ok": "ok"}}


def http_job(user, server, rows: int, path: str, **options) -> Job:
    """A job of `rows` names, each a GET of `path` on the stand-in server."""
    params = http_params(server.url + path)
    return make_job(user, csv_of(rows), processor="http", params=params, **options)


def test_requests_in_flight_reach_but_never_exceed_the_concurrency(alice, worker_factory, server):
    worker_factory(concurrency=2)
    job = http_job(alice, server, 600, "/latency", concurrency=16)
    job = finished(job)
    assert job.status == JobStatus.COMPLETED and job.succeeded == 600
    assert len(server.requests) == 600  # every row once
    state = server.httpd.state
    # The promise to the service: never more than `concurrency` at once; and the job does use it.
    assert 8 <= state["max_inflight"] <= 16


def test_a_pool_process_killed_mid_io_job_loses_no_row_and_doubles_none(
    alice, worker_factory, server
):
    # Loops claim a chunk before the last one drains (jobs/chunk_loop.py), so the killed process
    # may hold two chunks: the worker's new process takes both over at once (same machine).
    worker = worker_factory(concurrency=2)
    rows = 2_000
    job = http_job(alice, server, rows, "/latency", concurrency=32)
    wait_for(lambda: Job.objects.get(pk=job.pk).succeeded > 400, message="first rows")
    assert worker.kill_child() is not None
    job = finished(job)
    assert job.status == JobStatus.COMPLETED, worker.tail()
    assert job.counts["succeeded"] == rows and job.counts["running"] == 0
    body = b"".join(results.stream(job, "csv")).decode()
    assert [r["name"] for r in csv.DictReader(io.StringIO(body))] == [f"n{i}" for i in range(rows)]
    asked = Counter(r["path"].rsplit("=", 1)[1] for r in server.requests)
    assert set(asked) == {f"n{i}" for i in range(rows)}  # every row reached the service
    # Asked again: only rows the killed process had in flight or had not committed yet (a sync
    # point's worth), never its chunks' rows wholesale.
    assert sum(n - 1 for n in asked.values()) < 200


def test_cancelled_jobs_stuck_on_a_slow_service_free_the_worker_within_seconds(
    alice, worker_factory
):
    # A cancelled loop waited for its requests in flight: jobs cancelled against a service
    # answering after 30 s held both pool processes that long, and a new one-row job waited.
    # The rows in those requests still finish and keep their answers (API.md).
    worker = worker_factory(concurrency=2)
    with holding_server(30.0) as slow:
        stuck = [http_job(alice, slow, 40, "/hold", concurrency=4) for _ in range(2)]
        # One loop of four threads each, every thread waiting: both pool processes are held.
        worker.wait_for(lambda: len(slow.requests) >= 8, timeout=30, message="held requests")
        cancelled_at = time.monotonic()
        for job in stuck:
            services.cancel(Job.objects.get(pk=job.pk), actor="alice")
        fresh = make_job(alice, "name\na\n")
        done = finished(fresh, timeout=20)
        took = time.monotonic() - cancelled_at
        assert done.status == JobStatus.COMPLETED and done.succeeded == 1, worker.tail()
        assert took < 10, f"the new job finished {took:.1f} s after the cancels"
        for job in stuck:
            job = Job.objects.get(pk=job.pk)
            # Still in a request: running until the service answers.
            assert (job.status, job.running, job.cancelled) == (JobStatus.CANCELLED, 4, 36)
        slow.httpd.state["release"].set()
        for job in stuck:
            job = wait_for(
                lambda job=job: (j := Job.objects.get(pk=job.pk)).running == 0 and j, timeout=10
            )
            assert job.status == JobStatus.CANCELLED
            assert (job.succeeded, job.failed, job.cancelled) == (4, 0, 36), worker.tail()
            assert job.counts == {"total": job.total, **finish.recount(job)}
            assert job.rows.filter(status="succeeded", output={"ok": True}).count() == 4
        assert len(slow.requests) == 8  # nothing started after the cancels


def test_rate_limit_holds_across_workers(alice, worker_factory, server):
    worker_factory(concurrency=2)
    worker_factory(concurrency=2)
    server.httpd.state["latency"] = 0.0
    job = http_job(alice, server, 100, "/latency", concurrency=32, rate_limit=600)
    job = finished(job)
    assert job.status == JobStatus.COMPLETED and job.succeeded == 100
    times = sorted(server.times)
    # 600/min is 10 a second. The limiter promises it over any rolling minute; on a shorter
    # window W the most a server can see is W/60 of the limit plus one slot's burst (requests of
    # one slot may reach the server late, beside the next slot's), however many workers ask.
    for window in (3.0, 5.0):
        worst = max(sum(1 for t in times if start <= t < start + window) for start in times)
        assert worst <= 600 * window / 60 + 10, (window, worst)
    # …so 100 requests cannot be done in less than about ten seconds (slower is fine).
    assert times[-1] - times[0] >= 8.0


def test_a_run_of_429s_auto_pauses_and_the_job_resumes_by_itself(
    alice, worker_factory, server, settings
):
    worker_factory(beat=True, BATCHHUB_AUTOPAUSE_AFTER="5")
    server.httpd.state["throttle_until"] = time.time() + 4
    job = http_job(alice, server, 40, "/throttled", concurrency=4, max_attempts=10)
    wait_for(
        lambda: Job.objects.get(pk=job.pk).status == JobStatus.PAUSED,
        timeout=60,
        message="auto-pause",
    )
    paused = Job.objects.get(pk=job.pk)
    assert "429" in paused.pause_reason and paused.resume_at is not None
    job = finished(job)
    assert job.status == JobStatus.COMPLETED and job.succeeded == 40
    types = list(JobEvent.objects.filter(job=job).values_list("type", flat=True))
    assert "auto_paused" in types and "auto_resumed" in types
    assert types.index("auto_paused") < types.index("auto_resumed") < types.index("completed")
    # It may pause again if the service still says no after the first wait; each resume is the
    # system's own doing.
    resumed_by = JobEvent.objects.filter(job=job, type="auto_resumed").values_list(
        "actor", flat=True
    )
    assert set(resumed_by) == {"system"}


# The hand-on itself is tested without a worker (tests/jobs/test_quick_resume.py, threads and
# real requests on PostgreSQL); this run with a real worker is for BATCHHUB_SLOW=1.
@pytest.mark.slow
def test_a_quick_resume_starts_rows_again_at_once(alice, api_alice, worker_factory, server):
    # The loop that saw the pause gives its chunk back once its requests in flight are in; the
    # resume's loop had looked before that, found the job's only chunk held and stopped. The
    # chunk then waited for the reaper's stall limit before a row started again.
    worker = worker_factory(concurrency=2, beat=True)
    server.httpd.state["latency"] = 1.0
    job = http_job(alice, server, 60, "/latency", concurrency=4)
    # Past a step's first seconds: its loop would not claim the chunk again itself.
    worker.wait_for(lambda: len(server.requests) >= 12, timeout=30, message="first rows")
    services.pause(Job.objects.get(pk=job.pk), actor="alice")
    time.sleep(0.5)  # the loop sees it; its requests are still in flight
    services.resume(Job.objects.get(pk=job.pk), actor="alice")
    resumed_at, asked = time.time(), len(server.requests)
    worker.wait_for(lambda: len(server.requests) > asked, timeout=30, message="rows again")
    started = sorted(server.times)[asked]  # the first request made since the resume
    assert started - resumed_at < 4.0, f"rows started again {started - resumed_at:.1f} s later"
    job = finished(job)
    assert job.status == JobStatus.COMPLETED, worker.tail()
    body = api_alice.get(f"/api/v1/jobs/{job.public_id}").json()
    assert body["counts"] == {
        "total": 60,
        "pending": 0,
        "running": 0,
        "succeeded": 60,
        "failed": 0,
        "cancelled": 0,
    }
    assert Counter(r["path"] for r in server.requests).most_common(1)[0][1] == 1  # each row once
    assert server.httpd.state["max_inflight"] <= 4  # never more loops than the start had
