"""What faults cost, measured on real workers (PostgreSQL + Redis, the default lease).

A server's return to the next progress, the tail a poison row adds to its chunk, and the status
answers seen throughout: never a 500, counters always valid. Each test prints a JSON line with
its figures (`-s` shows them; docs/performance.md quotes them)."""

from __future__ import annotations

import json
import os
import re
import threading
import time

import pytest
from django.db import close_old_connections, connection

from jobs.models import Job, JobEvent, JobStatus, Row, RowStatus
from tests.conftest import _api_client_for, make_job, rows_text
from tests.faults.test_faults import finished, names_in_results, needs_services_script, services

pytestmark = [pytest.mark.e2e]

DEFAULT_LEASE = 120
REAPER = "5"  # the default interval, not the 1 s the other fault tests use


class Poller(threading.Thread):
    """GET the job's status every `interval` through the API, as a client would, and keep
    every answer: (monotonic time, status code, counts or None)."""

    def __init__(self, user, job: Job, interval: float = 0.2):
        super().__init__(daemon=True)
        self.client = _api_client_for(user)
        self.client.raise_request_exception = False  # a 500 is an answer to record
        self.url = f"/api/v1/jobs/{job.public_id}"
        self.interval = interval
        self.answers: list[tuple[float, int, dict | None]] = []
        self.halt = threading.Event()
        self.malformed: list[tuple[dict, dict]] = []

    def run(self) -> None:
        try:
            while not self.halt.is_set():
                # What Django's handler does at the start of a real request (the test client
                # leaves it out): drop a connection the database's restart broke.
                close_old_connections()
                response = self.client.get(self.url)
                counts = response.json().get("counts") if response.status_code == 200 else None
                if response.status_code == 503:
                    # The envelope and when to come back, as the API promises.
                    body = response.json()
                    if not (response.get("Retry-After") and body.get("error", {}).get("code")):
                        self.malformed.append((dict(response.items()), body))
                self.answers.append((time.monotonic(), response.status_code, counts))
                if counts is not None and response.json()["status"] in ("completed", "partial"):
                    return
                self.halt.wait(self.interval)
        finally:
            connection.close()

    def stop(self) -> None:
        self.halt.set()
        self.join(30)

    def check(self) -> None:
        """No answer ≥ 500 but 503; every counter ≥ 0 and together `total`, at every answer."""
        codes = sorted({code for _, code, _ in self.answers})
        assert all(code in (200, 503) for code in codes), codes
        assert not self.malformed, self.malformed[:3]
        for _, _, counts in self.answers:
            if counts is None:
                continue
            parts = {k: v for k, v in counts.items() if k != "total"}
            assert min(parts.values()) >= 0, counts
            assert sum(parts.values()) == counts["total"], counts


def succeeded_now(job: Job) -> int | None:
    try:
        return Job.objects.values_list("succeeded", flat=True).get(pk=job.pk)
    except Exception:
        connection.close()  # the database is away, or just came back
        return None


def seconds_to_progress(job: Job, since: float, timeout: float = 60) -> float:
    """From `since` (a server back) to the first commit of rows that reads after it."""
    deadline = time.monotonic() + timeout
    first = None
    while time.monotonic() < deadline:
        now = succeeded_now(job)
        if now is not None:
            if first is None:
                first = now
            elif now > first:
                return time.monotonic() - since
        time.sleep(0.05)
    raise AssertionError(f"no progress within {timeout} s of the server's return")


def report(**figures) -> None:
    print(json.dumps({"bench": "faults", **figures}))


def big_job(alice, n: int) -> Job:
    return make_job(alice, rows_text(n), processor="crash_test", params={"delay": 0.0002})


def outage(alice, worker_factory, settings, server: str, down_s: float) -> dict:
    needs_services_script()
    settings.BATCHHUB_LEASE_SECONDS = DEFAULT_LEASE
    worker = worker_factory(beat=True, BATCHHUB_REAPER_INTERVAL=REAPER)
    n = 60_000
    job = big_job(alice, n)
    worker.wait_for(lambda: (succeeded_now(job) or 0) >= 2000, timeout=120, message="progress")
    poller = Poller(alice, job)
    poller.start()
    connection.close()
    services(f"stop-{server}")
    time.sleep(down_s)
    services(f"start-{server}")
    back = time.monotonic()
    recovery = seconds_to_progress(job, back)
    job = finished(job, timeout=180)
    poller.stop()
    assert job.status == JobStatus.COMPLETED, worker.tail()
    assert names_in_results(job) == [f"person{i}" for i in range(n)]
    assert job.counts == {
        "total": n,
        "pending": 0,
        "running": 0,
        "succeeded": n,
        "failed": 0,
        "cancelled": 0,
    }
    poller.check()
    assert b"counters corrected" not in worker.log_path.read_bytes()  # exact all along
    codes = [code for _, code, _ in poller.answers]
    figures = {
        "fault": f"{server} down {down_s} s, default lease",
        "progress_after_return_s": round(recovery, 2),
        "polls": len(codes),
        "polls_503": codes.count(503),
    }
    report(**figures)
    assert recovery < 10, figures
    return figures


def test_progress_resumes_within_10s_of_redis_coming_back(alice, worker_factory, settings):
    outage(alice, worker_factory, settings, "redis", 2.0)


def test_progress_resumes_within_3s_of_redis_back_after_7s_down(alice, worker_factory, settings):
    # The worker's consumer retries the broker at most a second apart (batchhub/celery_consumer):
    # at kombu's default intervals (2, 4, 6 s …) its next attempt after 7 s down is at 12 s.
    figures = outage(alice, worker_factory, settings, "redis", 7.0)
    assert figures["progress_after_return_s"] < 3, figures


def test_progress_resumes_within_10s_of_postgres_coming_back(alice, worker_factory, settings):
    figures = outage(alice, worker_factory, settings, "pg", 2.0)
    assert figures["polls_503"] > 0  # the polls did see the database away: 503, never 500


def test_poison_row_in_a_5000_row_chunk_costs_less_than_the_chunk(alice, worker_factory, settings):
    """A row that kills its worker, in a 5,000-row chunk (one loop, 5 s of CPU): the
    chunk's good rows finish at ≥ 0.5 of the rate of the same chunk without it, the poison row
    fails alone with one attempt per death, and every poll through the crashes is valid."""
    settings.BATCHHUB_LEASE_SECONDS = DEFAULT_LEASE
    worker = worker_factory(beat=True, BATCHHUB_REAPER_INTERVAL=REAPER)
    n, params = 5000, {"spin": 0.001}

    def run(text: str) -> tuple[Job, Poller]:
        job = make_job(
            alice, text, processor="crash_test", params=params, concurrency=1, max_attempts=3
        )
        poller = Poller(alice, job)
        poller.start()
        job = finished(job, timeout=180)
        poller.stop()
        return job, poller

    clean, _ = run(rows_text(n, header="name,text"))
    poisoned, poller = run(rows_text(n, header="name,text").replace("person2718,", "poison,", 1))
    assert clean.status == JobStatus.COMPLETED and clean.succeeded == n
    assert poisoned.status == JobStatus.PARTIAL, worker.tail()
    assert (poisoned.succeeded, poisoned.failed, poisoned.running, poisoned.pending) == (
        n - 1,
        1,
        0,
        0,
    )
    names = names_in_results(poisoned)
    assert names == [("poison" if i == 2718 else f"person{i}") for i in range(n)]
    poison = Row.objects.get(job=poisoned, index=2718)
    assert poison.status == RowStatus.FAILED and "worker died" in poison.error
    assert set(
        Row.objects.filter(job=poisoned).exclude(index=2718).values_list("status", flat=True)
    ) == {RowStatus.SUCCEEDED}
    kills = len(re.findall(rb"exited with 'signal 9", worker.log_path.read_bytes()))
    # Every death is an attempt of the row that caused it, and each one was taken over.
    recovered = JobEvent.objects.filter(job=poisoned, type="recovered").count()
    assert poison.attempts == kills == recovered >= 3, (poison.attempts, kills, recovered)
    poller.check()
    assert b"counters corrected" not in worker.log_path.read_bytes()
    normal = (clean.finished_at - clean.started_at).total_seconds()
    hit = (poisoned.finished_at - poisoned.started_at).total_seconds()
    rate_ratio = ((n - 1) / hit) / (n / normal)
    figures = {
        "fault": "poison row in a 5000-row chunk, max_attempts 3",
        "chunk_s": round(normal, 2),
        "with_poison_s": round(hit, 2),
        "tail_over_chunk": round((hit - normal) / normal, 2),
        "good_rows_rate_ratio": round(rate_ratio, 2),
        "worker_deaths": kills,
    }
    report(**figures)
    assert hit - normal < 3 * normal, figures
    assert rate_ratio >= 0.5, figures


BENCH_ROWS = int(os.environ.get("FAULT_BENCH_ROWS") or 100_000)


def test_bench_a_job_through_every_fault_against_the_same_job_undisturbed(
    alice, worker_factory, settings
):
    """The benchmark line of the fault tests: a FAULT_BENCH_ROWS-row template job (100,000 by
    default to keep the suite short; 300,000 for docs/performance.md) undisturbed, then again
    through a pool process killed, Redis restarted, PostgreSQL restarted and a second pool
    process killed (at 20/40/60/80 % of its rows). Same results, every row once."""
    needs_services_script()
    settings.BATCHHUB_LEASE_SECONDS = DEFAULT_LEASE
    worker = worker_factory(beat=True, BATCHHUB_REAPER_INTERVAL=REAPER)
    n = BENCH_ROWS
    text = rows_text(n)
    expected = [f"person{i}" for i in range(n)]

    def seconds(job: Job) -> float:
        return (job.finished_at - job.started_at).total_seconds()

    finished(make_job(alice, rows_text(2000)), timeout=120)  # warm-up: pool processes, caches
    calm = finished(make_job(alice, text), timeout=600)
    assert calm.status == JobStatus.COMPLETED and names_in_results(calm) == expected

    job = make_job(alice, text)
    poller = Poller(alice, job, interval=0.5)
    poller.start()
    faults = [
        ("kill -9 pool process", worker.kill_child),
        ("restart Redis", lambda: services("restart-redis")),
        ("restart PostgreSQL", lambda: services("restart-pg")),
        ("kill -9 pool process", worker.kill_child),
    ]
    for k, (_name, act) in enumerate(faults, start=1):
        worker.wait_for(
            lambda k=k: (succeeded_now(job) or 0) >= n * k // (len(faults) + 1),
            timeout=300,
            interval=0.1,
            message=f"{k * 20} % of the rows",
        )
        connection.close()
        act()
        connection.close()
    job = finished(job, timeout=600)
    poller.stop()
    assert job.status == JobStatus.COMPLETED, worker.tail()
    assert job.counts == {
        "total": n,
        "pending": 0,
        "running": 0,
        "succeeded": n,
        "failed": 0,
        "cancelled": 0,
    }
    assert names_in_results(job) == expected
    assert set(Row.objects.filter(job=job).values_list("attempts", flat=True)) <= {1, 2}
    poller.check()
    assert b"counters corrected" not in worker.log_path.read_bytes()
    figures = {
        "fault": "; ".join(name for name, _ in faults),
        "rows": n,
        "undisturbed_s": round(seconds(calm), 2),
        "disturbed_s": round(seconds(job), 2),
        "ratio": round(seconds(job) / seconds(calm), 2),
        "polls": len(poller.answers),
        "polls_503": [code for _, code, _ in poller.answers].count(503),
    }
    report(**figures)
    # Each fault costs seconds, not a lease: four of them add well under a lease together.
    assert seconds(job) - seconds(calm) < 40, figures


def test_jobs_taking_turns_all_move_within_seconds_of_redis_coming_back(
    alice, worker_factory, settings
):
    """Four one-loop jobs on two pool processes: at any time two steps run and two wait in the
    queue. Redis restarted without persistence loses the waiting two; the running two queue
    their next steps once it is back, so the queue is never empty for long. The reaper tells
    the lost steps from those waiting their turn by its own message's place in the queue, and
    restarts the jobs that lost theirs within seconds, not after the lease."""
    needs_services_script()
    settings.BATCHHUB_LEASE_SECONDS = DEFAULT_LEASE
    worker = worker_factory(beat=True, BATCHHUB_REAPER_INTERVAL=REAPER)
    n = 40_000
    jobs = [
        make_job(
            alice, rows_text(n), processor="crash_test", params={"delay": 0.0002}, concurrency=1
        )
        for _ in range(4)
    ]
    worker.wait_for(
        lambda: all((succeeded_now(job) or 0) >= 1000 for job in jobs),
        timeout=180,
        message="every job's first turn",
    )
    connection.close()
    services("restart-redis")
    back = time.monotonic()
    at_return = [succeeded_now(job) for job in jobs]
    moved: dict[int, float] = {}
    deadline = back + 90
    while len(moved) < len(jobs) and time.monotonic() < deadline:
        for k, job in enumerate(jobs):
            now = succeeded_now(job)
            if k not in moved and now is not None and now > (at_return[k] or 0):
                moved[k] = time.monotonic() - back
        time.sleep(0.1)
    assert len(moved) == len(jobs), (moved, worker.tail())
    for job in jobs:
        job = finished(job, timeout=240)
        assert job.status == JobStatus.COMPLETED, worker.tail()
        assert job.counts["succeeded"] == n and job.counts["running"] == 0
        assert names_in_results(job) == [f"person{i}" for i in range(n)]
    restarts = JobEvent.objects.filter(job__in=jobs, type="recovered").count()
    figures = {
        "fault": "Redis restarted, four jobs taking turns on two processes, default lease",
        "slowest_job_progress_after_return_s": round(max(moved.values()), 2),
        "restarts": restarts,
    }
    report(**figures)
    # Two jobs' steps were lost at most: each restarted once; a job only waiting was left alone.
    assert restarts <= 2, figures
    assert max(moved.values()) < 30, figures
