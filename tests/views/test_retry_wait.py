"""Rows waiting for another try: the job page says so, why, and when the next try is due,
instead of "Rows / s 0" under a job that looks stuck. Driven by the engine against a real HTTP
server on loopback answering 503 (or 500) as a service under maintenance would."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from jobs import runner
from jobs.ingest import loading
from jobs.models import Job, JobStatus
from tests.conftest import make_job, rows_text
from tests.processors.servers import EchoHandler, LocalServer

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def service(settings):
    settings.BATCHHUB_PROCESSOR_ALLOW_PRIVATE = "127.0.0.0/8"
    with LocalServer(EchoHandler) as server:
        yield server


def _job(alice, service, path: str) -> Job:
    params = {"method": "GET", "url": service.url + path + "?row={name}", "timeout": 10}
    job = make_job(alice, rows_text(3), "http", params, concurrency=2, max_attempts=5)
    loading.ingest(job.pk)
    runner.work_once(job.pk)
    return Job.objects.get(pk=job.pk)


def _notice(client, job: Job) -> str:
    body = client.get(reverse("jobs:progress", args=[job.public_id]), **HTMX).content.decode()
    found = re.search(r'data-testid="waiting-for">([^<]*)<', body)
    return found.group(1) if found else ""


def test_rows_waiting_for_a_retry_say_why_and_when(client_alice, alice, service):
    # The service asks for two minutes (Retry-After): the rows wait, nothing runs.
    job = _job(alice, service, "/status/503")
    assert job.status == JobStatus.PROCESSING
    assert (job.pending, job.running, job.succeeded, job.failed) == (3, 0, 0, 0)
    notice = _notice(client_alice, job)
    assert notice.startswith("Rows wait to be tried again: the last try failed (")
    assert "503" in notice
    due = re.search(r"The next try is due in (\d) min (\d\d) s\.", notice)
    assert due and 100 <= int(due.group(1)) * 60 + int(due.group(2)) <= 120, notice
    page = client_alice.get(reverse("jobs:detail", args=[job.public_id])).content.decode()
    assert "Rows wait to be tried again" in page
    assert "Waiting for a free worker" not in page


def test_the_wait_is_forgotten_once_rows_end(client_alice, alice, service):
    job = _job(alice, service, "/status/500")  # no Retry-After: a backoff of a second or two
    assert "Rows wait to be tried again" in _notice(client_alice, job)
    assert "500" in _notice(client_alice, job)
    # The service answers again: the next rows end, and the note goes with the wait.
    Job.objects.filter(pk=job.pk).update(
        params={**job.params, "url": service.url + "/echo?row={name}"}
    )
    from jobs.models import Chunk

    Chunk.objects.filter(job_id=job.pk).update(available_at=None)
    runner.work_once(job.pk)
    job = Job.objects.get(pk=job.pk)
    assert job.succeeded == 3 and (job.retry_reason, job.retry_at) == ("", None)
    assert "tried again" not in _notice(client_alice, job)


def test_a_row_waiting_for_a_retry_is_not_shown_as_failed_in_the_preview(
    client_alice, alice, service
):
    # The preview showed "pending" beside the error of a try that failed, with no word of
    # another try: a row that had failed for good, to a reader.
    job = _job(alice, service, "/status/503")
    body = client_alice.get(reverse("jobs:detail", args=[job.public_id])).content.decode()
    cells = re.findall(r'<td class="error-text">(.*?)</td>', body.split('id="results"', 1)[1])
    assert len(cells) == 3
    assert all(
        cell.startswith(
            '<span data-testid="retry-note">To be tried again; the last try failed:</span> '
            "The API answered 503 Service Unavailable"
        )
        for cell in cells
    ), cells
