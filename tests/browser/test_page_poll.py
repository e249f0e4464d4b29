"""Two tabs on one job, in a real browser: polls answered below Django's stack
(accounts/fast_page_poll.py) are swapped in by htmx like the stack's, and their buttons, which
carry no CSRF token of their own, work."""

from __future__ import annotations

import pytest

from accounts.fast_page_poll import FastPagePollMiddleware
from jobs import livestatus
from jobs.models import JobStatus
from tests.browser.conftest import wait_for
from tests.conftest import make_job

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROWS = 600


def _status(page) -> str:
    return page.get_by_test_id("status").inner_text().strip()


def _wait_for_status(page, label: str, timeout: float = 60_000) -> None:
    page.wait_for_function(
        f"() => document.querySelector('[data-testid=status]').innerText.trim() === '{label}'",
        timeout=timeout,
    )


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
    _wait_for_status(page, "Paused")

    # A second tab of the same browser: same session, polling the same paused job each second;
    # within a second the later of the two polls reuses the fragment the earlier one rendered.
    other = page.context.new_page()
    other.goto(url)
    assert _status(other) == "Paused"
    wait_for(lambda: len(answered) >= 2, timeout=20, message="polls answered below the stack")
    assert set(answered) == {200}
    assert _status(page) == _status(other) == "Paused"
    # The page's own render carries the forms' tokens; a polled fragment has none, and its
    # buttons post with the page's token that htmx sends in a header (templates/base.html).
    other.wait_for_function(
        "() => !document.querySelector('#progress input[name=csrfmiddlewaretoken]')",
        timeout=20_000,
    )

    other.get_by_role("button", name="Resume").click()
    _wait_for_status(other, "Completed")
    _wait_for_status(page, "Completed")  # the first tab follows, then stops polling (286)
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED and job.succeeded == ROWS
    assert "Resumed by alice" in page.locator("#timeline").inner_text()
