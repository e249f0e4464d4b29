"""A database lost while rows are read out (downloads, the page's preview, ?include=results) is
Django's OperationalError, as from any other query: the page and the API answer 503 + Retry-After
instead of 500, and the connection is checked before it is used again.

PostgreSQL only: there the rows come through COPY on psycopg's own cursor.
"""

from __future__ import annotations

import psycopg
import pytest
from django.db import OperationalError, connection
from django.urls import reverse

from jobs import results
from jobs.models import JobStatus
from tests.conftest import make_job

pytestmark = pytest.mark.django_db


@pytest.fixture
def done_job(alice, run_job):
    if connection.vendor != "postgresql":
        pytest.skip("SQLite reads rows through Django's cursor")
    job = run_job(make_job(alice, "name,text\nann,a\nbob,b\n"))
    assert job.status == JobStatus.COMPLETED
    return job


@pytest.fixture
def lose_database(monkeypatch):
    """From now on every COPY finds the server gone, as psycopg says it."""

    def lose() -> None:
        connection.ensure_connection()
        with connection.connection.cursor() as cursor:
            cursor_class = type(cursor)

        def lost(self, *args, **kwargs):
            raise psycopg.OperationalError("server closed the connection unexpectedly")

        monkeypatch.setattr(cursor_class, "copy", lost)

    return lose


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json"])
def test_a_download_that_loses_the_database_raises_djangos_error(done_job, lose_database, fmt):
    lose_database()
    with pytest.raises(OperationalError):
        b"".join(results.stream(done_job, fmt))
    assert connection.errors_occurred  # checked before the next request uses it


def test_the_job_page_answers_503_when_its_preview_loses_the_database(
    client_alice, done_job, lose_database
):
    lose_database()
    response = client_alice.get(reverse("jobs:detail", args=[done_job.public_id]))
    assert response.status_code == 503
    assert response["Retry-After"]
    assert "The database is busy" in response.content.decode()


def test_include_results_answers_503_when_it_loses_the_database(api_alice, done_job, lose_database):
    lose_database()
    response = api_alice.get(f"/api/v1/jobs/{done_job.public_id}?include=results")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "service_unavailable"
