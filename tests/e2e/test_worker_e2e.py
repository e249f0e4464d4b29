"""End to end on PostgreSQL + Redis with real `celery worker` processes."""

from __future__ import annotations

import csv
import io
import time

import pytest

from jobs import reaper, results, services
from jobs.models import Job, JobStatus, Row
from tests.conftest import make_job, rows_text
from tests.support.worker import wait_for

pytestmark = [pytest.mark.e2e]


def finished(job: Job, timeout: float = 180) -> Job:
    def done():
        fresh = Job.objects.get(pk=job.pk)
        return fresh if fresh.is_terminal else None

    return wait_for(done, timeout=timeout, message=f"job {job.public_id} to finish")


def csv_rows(job: Job) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(b"".join(results.stream(job, "csv")).decode())))


def test_ten_thousand_rows_end_to_end(alice, worker):
    job = make_job(alice, rows_text(10_000), params={"template": "{name} says {text}"})
    job = finished(job)
    assert job.status == JobStatus.COMPLETED, worker.tail()
    assert job.counts == {
        "total": 10_000,
        "pending": 0,
        "running": 0,
        "succeeded": 10_000,
        "failed": 0,
        "cancelled": 0,
    }
    rows = csv_rows(job)
    assert len(rows) == 10_000
    assert [r["name"] for r in rows] == [f"person{i}" for i in range(10_000)]
    assert rows[9_999]["output.text"] == "person9999 says I love item 9999"
    assert set(Row.objects.filter(job=job).values_list("attempts", flat=True)) == {1}


def test_pause_then_resume_finishes_every_row_exactly_once(alice, worker, settings):
    settings.BATCHHUB_CHUNK_ROWS = 200
    job = make_job(
        alice, rows_text(30_000), processor="sentiment", concurrency=2, column_map={"text": "text"}
    )
    wait_for(lambda: Job.objects.get(pk=job.pk).succeeded > 0, message="first rows")
    services.pause(Job.objects.get(pk=job.pk), actor="alice")

    def drained() -> Job | None:  # the rows already running finish
        fresh = Job.objects.get(pk=job.pk)
        return fresh if fresh.status == JobStatus.PAUSED and fresh.running == 0 else None

    paused = wait_for(drained, timeout=30, message="the paused job's running rows to finish")
    time.sleep(1)  # a second in which a paused job must make no progress
    assert Job.objects.get(pk=job.pk).succeeded == paused.succeeded  # progress stopped
    assert paused.succeeded < 30_000
    services.resume(paused, actor="alice")
    job = finished(job)
    assert job.status == JobStatus.COMPLETED, worker.tail()
    rows = csv_rows(job)
    assert [r["name"] for r in rows] == [f"person{i}" for i in range(30_000)]
    # VADER reads "187" as slang for murder, so that one row is neutral: the label is real.
    assert {r["_status"] for r in rows} == {"succeeded"}
    assert {r["sentiment_label"] for r in rows} <= {"positive", "neutral"}
    assert set(Row.objects.filter(job=job).values_list("attempts", flat=True)) == {1}


def test_sigkilled_workers_lose_nothing_and_duplicate_nothing(alice, worker_factory, settings):
    settings.BATCHHUB_CHUNK_ROWS = 500
    first = worker_factory()
    job = make_job(alice, rows_text(20_000), processor="sentiment", concurrency=2)
    wait_for(lambda: Job.objects.get(pk=job.pk).succeeded > 0, message="first rows")
    assert first.kill_child() is not None  # a pool process dies mid-chunk; the worker replaces it
    wait_for(
        lambda: Job.objects.get(pk=job.pk).succeeded > 2_000,
        message="progress after the child was killed",
    )
    first.kill()  # now the whole worker, main process included
    killed_at = Job.objects.get(pk=job.pk)
    assert not killed_at.is_terminal
    second = worker_factory()
    # Redis holds the dead worker's messages until their visibility timeout; the reaper is what
    # puts the job back to work once its chunk leases have run out.
    time.sleep(settings.BATCHHUB_LEASE_SECONDS + 1)
    from django.db import transaction

    with transaction.atomic():
        reaper.reap()
    job = finished(job)
    assert job.status == JobStatus.COMPLETED, second.tail()
    rows = csv_rows(job)
    assert len(rows) == 20_000
    assert [r["name"] for r in rows] == [f"person{i}" for i in range(20_000)]
    assert job.counts["succeeded"] == 20_000 and job.counts["running"] == 0


@pytest.mark.parametrize("wrong", ["password", "database"])
def test_a_worker_that_can_never_use_the_database_stops_saying_why(transactional_db, wrong):
    # With a wrong password it said "ready", took tasks and reported each one succeeded after
    # 30 s of reconnecting; nothing told the operator.
    import subprocess
    import sys

    from django.db import connection

    from tests.support.worker import ROOT, require_real_services, worker_env

    require_real_services()
    db = connection.settings_dict
    password = "wrong" if wrong == "password" else db["PASSWORD"]
    name = "no_such_db" if wrong == "database" else db["NAME"]
    env = worker_env()
    env["DATABASE_URL"] = f"postgres://{db['USER']}:{password}@{db['HOST']}:{db['PORT']}/{name}"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "batchhub", "worker", "--concurrency=1",
         "--without-gossip", "--without-mingle", "--without-heartbeat"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode != 0, output[-2000:]
    assert "The worker cannot use the database (DATABASE_URL)" in output
    assert " ready." not in output
    assert time.monotonic() - started < 60
