"""A job whose service answers 503: its page says the rows wait to be tried again, why, and when,
as a real worker holds them back (the in-process driver does not wait out a backoff)."""

from __future__ import annotations

import re

import pytest
from django.db import connection
from playwright.sync_api import expect

from tests.conftest import make_job, rows_text
from tests.processors.servers import EchoHandler, LocalServer

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _due_seconds(text: str) -> int:
    found = re.search(r"due in (?:(\d+) min )?(\d+) s", text)
    assert found, text
    return int(found.group(1) or 0) * 60 + int(found.group(2))


def test_rows_waiting_for_a_retry_say_why_and_when(
    page, live_server, login, alice, job_driver, settings
):
    if connection.vendor != "postgresql":
        pytest.skip("needs a real worker (PostgreSQL + Redis): the thread driver skips backoffs")
    settings.BATCHHUB_PROCESSOR_ALLOW_PRIVATE = "127.0.0.0/8"
    with LocalServer(EchoHandler) as service:
        params = {"method": "GET", "url": service.url + "/status/503?row={name}", "timeout": 10}
        job = make_job(alice, rows_text(3), "http", params, concurrency=2, max_attempts=5)
        login()
        page.goto(f"{live_server.url}/jobs/{job.public_id}/")
        notice = page.get_by_test_id("waiting-for")
        # It said "Rows / s 0" and nothing else: a job that looked stuck.
        expect(notice).to_contain_text("Rows wait to be tried again", timeout=60_000)
        text = notice.inner_text()
        assert "The API answered 503 Service Unavailable" in text
        assert page.get_by_test_id("status").inner_text().strip() == "Processing"
        assert page.get_by_test_id("rate").inner_text().strip() in ("0", "—")
        # The service asked for two minutes (Retry-After); the page counts them down.
        first = _due_seconds(text)
        assert 60 <= first <= 120
        page.wait_for_timeout(2500)
        assert _due_seconds(notice.inner_text()) < first
        assert len(service.requests) == 3  # one try per row so far: they do wait
