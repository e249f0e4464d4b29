"""A job page whose CSRF token went stale (the same browser signed out and in again in another
tab, which rotates the secret): its first click reloads it (batchhub/csrf_failure.py), in a real
browser, and the next click works. Before, the click did nothing at all."""

from __future__ import annotations

import pytest

from jobs.ingest import loading
from jobs.models import JobStatus
from tests.browser.conftest import PASSWORD, job_status, wait_for_status
from tests.conftest import make_job, rows_text

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

HOLD_POLLS = """() => {
    window.holdPolls = true;
    document.body.addEventListener("htmx:beforeRequest", (e) => {
        if (window.holdPolls && e.detail.requestConfig.verb === "get") e.preventDefault();
    });
}"""


def test_a_stale_token_reloads_the_page_and_the_next_click_works(page, live_server, login, alice):
    job = make_job(alice, rows_text(30))
    loading.ingest(job.pk)  # processing, and nothing runs it: it stays there
    job.refresh_from_db()
    assert job.status == JobStatus.PROCESSING
    login()
    page.goto(f"{live_server.url}/jobs/{job.public_id}/")
    assert job_status(page) == "Processing"

    # Another tab: signing out and in again rotates the CSRF secret. The page holds its polls
    # meanwhile: one that lands between the two is sent to sign in (right, but not this test's
    # case), which a loaded machine's slower tab made happen.
    page.evaluate(HOLD_POLLS)
    other = page.context.new_page()
    other.goto(f"{live_server.url}/")
    other.get_by_role("button", name="Log out").click()
    other.wait_for_url("**/accounts/login/**")
    other.get_by_label("Username").fill("alice")
    other.get_by_label("Password").fill(PASSWORD)
    other.get_by_role("button", name="Log in").click()
    other.wait_for_url(f"{live_server.url}/")
    other.close()
    page.evaluate("window.holdPolls = false")

    page.evaluate("window.loadedBefore = true")
    page.get_by_role("button", name="Pause").click()
    page.wait_for_function("() => window.loadedBefore === undefined")  # reloaded
    job.refresh_from_db()
    assert job.status == JobStatus.PROCESSING  # the stale post was refused, not half-done
    assert job_status(page) == "Processing"

    page.get_by_role("button", name="Pause").click()
    wait_for_status(page, "Paused")
    job.refresh_from_db()
    assert job.status == JobStatus.PAUSED
