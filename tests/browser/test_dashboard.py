"""The dashboard in a real browser: upload, watch live, pause/resume, download, cancel, API keys."""

from __future__ import annotations

import csv
import io
import re
from urllib.parse import urlsplit

import pytest

from jobs import services
from jobs.models import Job, JobStatus
from tests.browser.conftest import screenshot, wait_for_status
from tests.conftest import make_job

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ROWS = 3000


def _csv(rows: int) -> bytes:
    buf = io.StringIO()
    buf.write("name,text\n")
    for i in range(rows):
        buf.write(f"person{i},I love item {i}\n")
    return buf.getvalue().encode()


def _progress(page) -> int:
    return int(page.locator("#job-progress").get_attribute("value"))


def test_upload_watch_pause_resume_download(page, live_server, login, alice, job_driver, tmp_path):
    login()
    assert "No jobs yet — upload a CSV" in page.content()

    # Upload: a plain file input; the server keeps the file as a draft and shows the preview.
    page.get_by_role("link", name="New job", exact=True).first.click()
    page.get_by_label("Choose a CSV or JSONL file").set_input_files(
        {"name": "people.csv", "mimeType": "text/csv", "buffer": _csv(ROWS)}
    )
    page.get_by_role("button", name="Upload and preview").click()
    page.wait_for_url(re.compile(r"/jobs/new/\?draft="))
    assert page.get_by_test_id("row-count").inner_text() == str(ROWS)
    assert page.get_by_test_id("delimiter").inner_text() == "comma"
    preview = page.get_by_test_id("preview")
    assert preview.locator("tbody tr").count() == 10
    assert "person0" in preview.inner_text()

    # Changing the processor swaps its params form in place (htmx), without a reload.
    page.evaluate("window.__stillHere = true")
    page.get_by_test_id("processor").select_option("template")
    page.locator("textarea[name=param-template]").wait_for()
    page.locator("textarea[name=param-template]").fill("{name} was here")
    page.locator("input[name=param-output_column]").fill("greeting")
    assert page.evaluate("window.__stillHere") is True
    screenshot(page, "new-job-preview.png")

    asked: list[str] = []  # the path of every request the page makes from here on
    page.on("request", lambda request: asked.append(urlsplit(request.url).path))
    page.get_by_test_id("start").click()
    page.wait_for_url(re.compile(r"/jobs/job_[^/]+/$"))
    job = Job.objects.get(owner=alice)
    page.evaluate("window.__stillHere = true")

    # The bar moves and the stage changes while the page stays the same page.
    page.wait_for_function("() => document.querySelector('#job-progress').value > 0")
    first = _progress(page)
    page.wait_for_function(f"() => document.querySelector('#job-progress').value > {first}")
    assert page.locator(".stepper [aria-current=step]").get_attribute("data-stage") == "processing"
    assert page.evaluate("window.__stillHere") is True
    screenshot(page, "job-detail-running.png")

    # Pause: the status flips and progress stops.
    page.get_by_role("button", name="Pause").click()
    wait_for_status(page, "Paused")
    # Screen readers hear it through the live region (an out-of-band swap into #job-announce).
    assert page.locator("#job-announce").inner_text() == "Job paused."
    page.wait_for_timeout(1500)  # a chunk already in flight may still land
    paused_at = _progress(page)
    page.wait_for_timeout(2500)
    assert _progress(page) == paused_at
    assert paused_at < ROWS
    job.refresh_from_db()
    assert job.status == JobStatus.PAUSED and job.done == paused_at

    # Resume: it runs to the end, live.
    page.get_by_role("button", name="Resume").click()
    wait_for_status(page, "Completed")
    assert _progress(page) == ROWS
    assert page.locator(".stepper [aria-current=step]").get_attribute("data-stage") == "done"
    assert page.evaluate("window.__stillHere") is True
    # The results preview and timeline reloaded on their own when the job changed.
    page.wait_for_function(
        "() => document.querySelector('#results').innerText.includes('person0 was here')"
    )
    assert "Paused by alice" in page.locator("#timeline").inner_text()
    # Only the progress polls every second. The timeline reloads when there is something new
    # in it, and the results preview while its first rows are still being worked on.
    polls = sum(path.endswith("/progress/") for path in asked)
    timeline = sum(path.endswith("/events/") for path in asked)
    preview = sum(path.endswith("/rows/") for path in asked)
    entries = job.events.count()
    # (Seen: 14 polls, 5 timeline and 5 preview reloads, 7 entries; before, every poll that saw
    # a change reloaded both: 13, 13 and 13.)
    assert polls > entries, (polls, entries)  # a run long enough to tell them apart
    assert 1 <= timeline <= entries, (timeline, entries, polls)
    assert 1 <= preview <= entries + 3, (preview, entries, polls)

    # Download the CSV and check its rows.
    with page.expect_download() as info:
        page.get_by_test_id("download-csv-all").click()
    path = tmp_path / "results.csv"
    info.value.save_as(path)
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert rows[0] == ["name", "text", "greeting", "_status", "_error"]
    assert len(rows) == ROWS + 1
    assert rows[1] == ["person0", "I love item 0", "person0 was here", "succeeded", ""]
    assert rows[-1][2] == f"person{ROWS - 1} was here"


def test_cancel_another_job(page, live_server, login, alice, job_driver):
    big = "name,text\n" + "".join(f"p{i},t{i}\n" for i in range(20_000))
    job = make_job(alice, big, name="too-big")
    login()
    page.goto(f"{live_server.url}/jobs/{job.public_id}/")
    # Cancel once rows run (a job cancelled while still queued has no rows to count).
    page.wait_for_function(
        "() => document.querySelector('#job-progress').value > 0", timeout=60_000
    )
    page.once("dialog", lambda dialog: dialog.accept())  # hx-confirm asks first
    page.get_by_role("button", name="Cancel job").click()
    wait_for_status(page, "Cancelled")
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert job.cancelled > 0 and job.succeeded < job.total
    assert page.get_by_role("button", name="Pause").count() == 0
    assert page.get_by_role("button", name="Cancel job").count() == 0


def test_jobs_list_updates_live(page, live_server, login, alice, job_driver):
    make_job(alice, "name,text\n" + "".join(f"a{i},b{i}\n" for i in range(3000)), name="list-live")
    done = make_job(alice, "name,text\nx,y\n", name="small-one")
    stopped = make_job(alice, "name,text\nx,y\n", name="changed-my-mind")
    services.cancel(stopped, actor="alice")
    login()
    row = page.locator(f"tr[data-job='{done.public_id}']")
    row.get_by_text("Completed").wait_for(timeout=30_000)
    live = page.locator("tr.job-row", has_text="list-live")
    # The running job's row changes without a reload: its badge, then its counts.
    live.get_by_text("Processing").wait_for(timeout=30_000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('tr.job-row progress')]"
        ".some(p => p.value > 0 && p.value < p.max)"
    )
    screenshot(page, "jobs-list.png")
    live.get_by_text("Completed").wait_for(timeout=60_000)
    # Once nothing is active, the table stops polling.
    page.wait_for_function("() => !document.querySelector('#job-rows').hasAttribute('hx-trigger')")


def test_api_key_is_shown_once(page, live_server, login):
    login()
    page.goto(f"{live_server.url}/keys/")
    page.get_by_label("Name").fill("browser-test")
    page.get_by_role("button", name="Create key").click()
    key_box = page.locator("#new-key")
    key_box.wait_for()
    key = key_box.input_value()
    assert len(key) > 20
    assert key in page.content()
    page.reload()
    assert "browser-test" in page.content()
    assert key not in page.content()
    assert page.locator("#new-key").count() == 0


def test_another_users_job_is_a_404_page(page, live_server, login, bob):
    other = make_job(bob, "name,text\nx,y\n", name="bobs-job")
    login()
    response = page.goto(f"{live_server.url}/jobs/{other.public_id}/")
    assert response.status == 404
    assert "bobs-job" not in page.content()
    assert page.get_by_role("heading", name="Not found").is_visible()


def test_phone_width_has_no_horizontal_scroll(browser, live_server, media, alice):
    from tests.conftest import PASSWORD

    context = browser.new_context(viewport={"width": 375, "height": 740})
    page = context.new_page()
    make_job(alice, "name,text\nx,y\n", name="phone-job")
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server.url}/")
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the jobs page is {width}px wide on a 375px phone"
    context.close()
