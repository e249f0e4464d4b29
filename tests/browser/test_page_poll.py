"""Two tabs on one job, in a real browser: polls answered below Django's stack
(accounts/fast_page_poll.py) are swapped in by htmx like the stack's, and their buttons, which
carry no CSRF token of their own, work."""

from __future__ import annotations

import pytest

from accounts.fast_page_poll import FastPagePollMiddleware
from jobs import livestatus
from jobs.models import JobStatus
from tests.browser.conftest import job_status, wait_for, wait_for_status
from tests.conftest import make_job

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROWS = 600


def test_two_tabs_of_one_job_share_its_polls_and_either_can_resume_it(
    page, live_server, login, alice, job_driver, monkeypatch
):
    if livestatus._redis() is None:
        pytest.skip("polls are answered below the stack on the Redis cache (make test's step 2)")
    answered: list[int] = []
    real = FastPagePollMiddleware._answer

    def counting(self, request):
        response = real(self, request)
        if response is not None:
            answered.append(response.status_code)
        return response

    monkeypatch.setattr(FastPagePollMiddleware, "_answer", counting)
    job = make_job(alice, "name,text\n" + "".join(f"p{i},t{i}\n" for i in range(ROWS)))
    login()
    url = f"{live_server.url}/jobs/{job.public_id}/"
    page.goto(url)
    page.wait_for_function("() => document.querySelector('#job-progress').value > 0")
    page.get_by_role("button", name="Pause").click()
    wait_for_status(page, "Paused")

    # A second tab of the same browser: same session, polling the same paused job each second;
    # within a second the later of the two polls reuses the fragment the earlier one rendered.
    other = page.context.new_page()
    other.goto(url)
    assert job_status(other) == "Paused"
    wait_for(lambda: len(answered) >= 2, timeout=20, message="polls answered below the stack")
    assert set(answered) == {200}
    assert job_status(page) == job_status(other) == "Paused"
    # The page's own render carries the forms' tokens; a polled fragment has none, and its
    # buttons post with the page's token that htmx sends in a header (templates/base.html).
    other.wait_for_function(
        "() => !document.querySelector('#progress input[name=csrfmiddlewaretoken]')",
        timeout=20_000,
    )

    other.get_by_role("button", name="Resume").click()
    wait_for_status(other, "Completed")
    wait_for_status(page, "Completed")  # the first tab follows, then stops polling (286)
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED and job.succeeded == ROWS
    assert "Resumed by alice" in page.locator("#timeline").inner_text()
