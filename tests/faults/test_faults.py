"""Fault tests: servers restarted and workers killed mid-job.

The job finishes, with nothing lost or doubled."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import time

import pytest
from django.db import connection

from jobs import results
from jobs.models import Job, JobStatus, Row, RowStatus
from tests.conftest import make_job, rows_text
from tests.support.worker import wait_for

pytestmark = [pytest.mark.e2e]


def finished(job: Job, timeout: float = 90) -> Job:
    def done():
        try:
            fresh = Job.objects.get(pk=job.pk)
        except Exception:
            connection.close()  # the database was restarted under us
            return None
        return fresh if fresh.is_terminal else None

    return wait_for(done, timeout=timeout, interval=0.5, message=f"job {job.public_id} to finish")


def names_in_results(job: Job) -> list[str]:
    body = b"".join(results.stream(job, "csv")).decode()
    return [r["name"] for r in csv.DictReader(io.StringIO(body))]


def services(cmd: str) -> None:
    subprocess.run(
        ["bash", os.environ["SERVICES_SCRIPT"], cmd, os.environ["SERVICES_DIR"]],
        check=True,
        capture_output=True,
        timeout=120,
    )


def needs_services_script():
    if not os.environ.get("SERVICES_SCRIPT"):
        pytest.skip("needs the servers started by scripts/services.sh (make test)")


def started(job: Job, at_least: int = 1) -> None:
    wait_for(lambda: Job.objects.get(pk=job.pk).succeeded >= at_least, message="progress")


def test_a_row_that_kills_its_worker_every_time_fails_alone(alice, worker_factory, settings):
    worker = worker_factory(beat=True)
    text = rows_text(300, header="name,text").replace("person150,", "poison,", 1)
    job = make_job(alice, text, processor="crash_test", params={}, max_attempts=3, concurrency=2)
    job = finished(job)
    assert job.status == JobStatus.PARTIAL, worker.tail()
    assert (job.succeeded, job.failed, job.running, job.pending) == (299, 1, 0, 0)
    poison = Row.objects.get(job=job, index=150)
    assert (
        poison.status == RowStatus.FAILED
        and "worker died" in poison.error
        and poison.attempts == 3
    )
    assert len(names_in_results(job)) == 300


def test_redis_restart_mid_job_loses_nothing(alice, worker_factory, settings):
    needs_services_script()
    worker_factory(beat=True)
    job = make_job(alice, rows_text(20_000), processor="crash_test", params={"delay": 0.0002})
    started(job, 500)
    services("restart-redis")  # no persistence: every queued message is gone
    job = finished(job)
    assert job.status == JobStatus.COMPLETED
    assert names_in_results(job) == [f"person{i}" for i in range(20_000)]
    assert job.counts["succeeded"] == 20_000


def test_postgres_restart_mid_job_loses_nothing(alice, worker_factory, settings):
    needs_services_script()
    worker_factory(beat=True)
    job = make_job(alice, rows_text(20_000), processor="crash_test", params={"delay": 0.0002})
    started(job, 500)
    connection.close()
    services("restart-pg")
    connection.close()
    job = finished(job)
    assert job.status == JobStatus.COMPLETED
    assert names_in_results(job) == [f"person{i}" for i in range(20_000)]
    assert job.counts["succeeded"] == 20_000


def test_three_sigkills_then_a_fresh_worker_finish_the_job(alice, worker_factory, settings):
    job = make_job(
        alice, rows_text(20_000), processor="crash_test", params={"delay": 0.0002}, concurrency=2
    )
    for round_ in range(3):
        w = worker_factory(beat=True)
        started(job, 1000 * (round_ + 1))
        w.kill_child()
        time.sleep(0.5)
        w.kill()
    worker_factory(beat=True)
    job = finished(job)
    assert job.status == JobStatus.COMPLETED
    assert names_in_results(job) == [f"person{i}" for i in range(20_000)]
    assert job.counts == {
        "total": 20_000,
        "pending": 0,
        "running": 0,
        "succeeded": 20_000,
        "failed": 0,
        "cancelled": 0,
    }
