"""A cancelled job's page while the rows in a request at the cancel come back, as htmx runs it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.ingest import loading
from tests.conftest import make_job, rows_text, set_published

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _failed_title(page) -> str:
    return page.locator("#failed-title").inner_text().strip()


def test_the_last_rows_of_a_cancel_reach_every_part_of_the_page(page, live_server, login, alice):
    # The page stopped polling at the cancel and froze its counts; then, once it polled on, the
    # last row failing came within the failed-rows section's throttle of the one before, and
    # htmx dropped it: "Failed rows (2)" under counters saying 3, until a reload.
    job = make_job(alice, rows_text(10), name="cancel-mid")
    loading.ingest(job.pk)
    now = timezone.now()
    set_published(
        job,
        status="cancelled",
        total=10,
        pending=0,
        running=3,
        succeeded=1,
        failed=1,
        cancelled=5,
        started_at=now - timedelta(seconds=5),
        finished_at=now,
    )
    login()
    page.goto(f"{live_server.url}/jobs/{job.public_id}/")
    assert _failed_title(page) == "Failed rows (1)"
    assert page.locator("#btn-retry").count() == 0  # the API refuses it while rows finish

    set_published(job, running=2, failed=2)
    page.wait_for_function(
        "() => document.querySelector('#failed-title').innerText.trim() === 'Failed rows (2)'"
    )
    set_published(job, running=0, failed=3, succeeded=2)  # the last rows, within the throttle's 3 s
    page.wait_for_function(
        "() => document.querySelector('[data-testid=failed]').innerText.trim() === '3'"
    )
    page.get_by_role("button", name="Retry failed rows").wait_for()
    page.wait_for_function(
        "() => document.querySelector('#failed-title').innerText.trim() === 'Failed rows (3)'",
        timeout=5_000,
    )
    assert page.locator("#progress").get_attribute("hx-trigger") is None  # watched to the end
    page.reload()
    assert _failed_title(page) == "Failed rows (3)"
