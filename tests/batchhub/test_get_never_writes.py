"""A GET never writes: on SQLite a write would queue behind the worker's lock (or fail with it).

The only write a GET may cause is the API key's "last used" stamp, once a minute per key, and it
is best effort (apikeys.services._touch): here the key was just used, so it is not due.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apikeys.models import APIKey
from tests.conftest import drive, make_job, rows_text

pytestmark = pytest.mark.django_db

WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")
PARTIALS = ("/progress/", "/rows/", "/events/")


def writes(ctx: CaptureQueriesContext) -> list[str]:
    return [q["sql"] for q in ctx.captured_queries if q["sql"].lstrip().upper().startswith(WRITES)]


def test_pages_and_api_reads_write_nothing(alice, client_alice, api_alice):
    job = drive(make_job(alice, rows_text(30)))
    running = make_job(alice, rows_text(30))
    APIKey.objects.filter(owner=alice).update(last_used_at=timezone.now())
    pages = [
        "/",
        f"/jobs/{job.public_id}/",
        f"/jobs/{job.public_id}/progress/",
        f"/jobs/{running.public_id}/progress/",
        f"/jobs/{job.public_id}/rows/",
        f"/jobs/{job.public_id}/events/",
        f"/jobs/{job.public_id}/download/csv/",
        "/keys/",
    ]
    api = [
        "/api/v1/jobs",
        f"/api/v1/jobs/{job.public_id}",
        f"/api/v1/jobs/{job.public_id}/rows",
        f"/api/v1/jobs/{job.public_id}/events",
        f"/api/v1/jobs/{job.public_id}/results",
        "/api/v1/processors",
        "/api/v1/keys",
    ]
    client_alice.get("/")  # the session's first read fills the cache; not what is measured
    for url in pages:
        with CaptureQueriesContext(connection) as ctx:
            hx = "true" if url.endswith(PARTIALS) else ""
            response = client_alice.get(url, HTTP_HX_REQUEST=hx)
            b"".join(response) if response.streaming else response.content
        # 286: the last poll of a finished job's progress (htmx stops polling).
        assert response.status_code in (200, 286), (url, response.status_code)
        assert not writes(ctx), (url, writes(ctx))
    for url in api:
        with CaptureQueriesContext(connection) as ctx:
            response = api_alice.get(url)
            b"".join(response) if response.streaming else response.content
        assert response.status_code == 200, (url, response.status_code)
        assert not writes(ctx), (url, writes(ctx))
