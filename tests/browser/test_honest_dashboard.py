"""The dashboard tells the truth: cancelled is not done, no rate while paused, failures counted.

Also the flows a batch tool is expected to have (run again, failed rows with their reasons) and
two checks over every page: no horizontal scroll on a 390 px phone, and a name for every control.
"""

from __future__ import annotations

import csv
import io
import re

import pytest

from jobs.models import Job, JobStatus
from jobs.processors import base as processors_base
from tests.browser.conftest import screenshot, wait_for, wait_for_status
from tests.conftest import PASSWORD, make_job

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

WATCHABLE = "tests.support.slow_processors:WatchableTemplateProcessor"
PHONE = {"width": 390, "height": 844}
# A control without a name in Playwright's ARIA snapshot: the role with no quoted name after it.
UNNAMED = re.compile(
    r"^\s*- (button|link|textbox|searchbox|combobox|listbox|checkbox|radio|spinbutton|slider"
    r"|switch|menuitem|tab)(\s*\[[^\]]*\])*\s*(:.*)?$"
)


@pytest.fixture
def failing_rows(settings):
    """This process and the worker use the same test processor: `fail` column → row error."""
    settings.BATCHHUB_PROCESSORS = [WATCHABLE]
    processors_base.reload_registry()
    yield
    settings.BATCHHUB_PROCESSORS = []
    processors_base.reload_registry()


def _big(rows: int) -> str:
    return "name,text\n" + "".join(f"p{i},some words for row {i}\n" for i in range(rows))


QUOTA = "The service said: quota exceeded"
LANGUAGE = "Text is not in a language we read"


def _reason(i: int) -> str:
    """15 rows fail for the quota, 6 for the language, 39 succeed."""
    if i % 4 == 1:
        return QUOTA
    if i % 4 == 2 and i < 24:
        return LANGUAGE
    return ""


def _with_failures() -> str:
    lines = ["name,text,fail", *(f"person{i},words {i},{_reason(i)}" for i in range(60))]
    return "\n".join(lines) + "\n"


def _text(page, testid: str) -> str:
    return page.get_by_test_id(testid).first.inner_text().strip()


def test_cancelled_job_shows_what_ran_and_what_was_cancelled(
    page, live_server, login, alice, job_driver
):
    job = make_job(alice, _big(20_000), name="cancel-me")
    login()
    page.context.grant_permissions(["notifications"], origin=live_server.url)
    page.goto(f"{live_server.url}/jobs/{job.public_id}/")
    page.wait_for_function(
        "() => document.querySelector('#job-progress').value > 0", timeout=60_000
    )
    notify = page.locator("[data-notify-button]")
    assert notify.is_visible() and notify.inner_text() == "Notifications on"
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Cancel job").click()
    wait_for_status(page, "Cancelled")
    # Ended while watched: nothing left to notify of (the button stayed until a reload).
    notify.wait_for(state="hidden")
    page.wait_for_timeout(500)
    page.reload()
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert 0 < job.cancelled and job.succeeded < job.total

    # The words: what ran, out of the total, and the cancelled rows apart; never "100%".
    processed = job.succeeded + job.failed
    text = _text(page, "bar-text")
    assert text.startswith(f"{processed:,} of {job.total:,} rows processed"), text
    assert "(100" not in text
    assert f"{job.cancelled:,} cancelled before they ran" in text

    # The bar: a succeeded segment and a cancelled one, sized by their rows, and no pending left.
    segbar = page.locator("#progress [data-testid=segbar]")
    succeeded = segbar.locator("[data-segment=succeeded]")
    cancelled = segbar.locator("[data-segment=cancelled]")
    assert int(succeeded.get_attribute("data-rows")) == job.succeeded
    assert int(cancelled.get_attribute("data-rows")) == job.cancelled
    assert float(cancelled.get_attribute("width")) == pytest.approx(
        100 * job.cancelled / job.total, abs=0.05
    )
    assert segbar.locator("[data-segment=pending]").count() == 0
    box_s, box_c = succeeded.bounding_box(), cancelled.bounding_box()
    assert box_c["width"] > box_s["width"]  # most of a 20,000-row job never ran

    # The stepper: stopped during processing, Finalizing never reached (not green), ends Cancelled.
    step = page.locator(".stepper [data-stage=processing]")
    assert step.get_attribute("data-state") == "cancelled"
    assert "cancelled" in step.inner_text()
    finalizing = page.locator(".stepper [data-stage=finalizing]")
    assert finalizing.get_attribute("data-state") == "skipped"
    assert "not reached" in finalizing.inner_text()
    last = page.locator(".stepper [aria-current=step]")
    assert last.get_attribute("data-stage") == "done"
    assert "Cancelled" in last.inner_text()
    # The line into the end from the step not reached is dashed like it, not a travelled green.
    line = last.evaluate("el => getComputedStyle(el, '::before').backgroundImage")
    assert line.startswith("repeating-linear-gradient"), line
    assert page.locator("[data-notify-button]").count() == 0

    # A finished job shows how long it took and its average rate, not a live rate or an ETA.
    assert page.get_by_test_id("duration").is_visible()
    assert re.fullmatch(r"[\d,.]+ rows/s", _text(page, "average-rate"))
    assert page.get_by_test_id("eta").count() == 0
    assert page.get_by_test_id("rate").count() == 0
    screenshot(page, "job-detail-cancelled.png")


def test_rate_and_eta_are_hidden_while_paused(page, live_server, login, alice, job_driver):
    job = make_job(alice, _big(20_000), name="pause-me")
    login()
    page.goto(f"{live_server.url}/jobs/{job.public_id}/")
    # The rate appears once a few seconds of work are measured, then the ETA with it.
    page.wait_for_function(
        "() => /^[\\d,.]+$/.test(document.querySelector('[data-testid=rate]').innerText.trim())",
        timeout=60_000,
    )
    page.wait_for_function(
        "() => document.querySelector('[data-testid=eta]').innerText.trim().startsWith('in ')"
    )
    # A count, and the concurrency beside it when an I/O job has handed out more rows than that.
    assert re.fullmatch(r"\d+(\nat most \d+ at once)?", _text(page, "in-flight"))
    # The tab title shows the progress.
    assert re.match(r"\d+% · Processing · pause-me", page.title()), page.title()

    page.get_by_role("button", name="Pause").click()
    wait_for_status(page, "Paused")
    assert _text(page, "rate") == "—"
    assert _text(page, "eta") == "—"
    page.wait_for_timeout(2500)  # polls keep coming while paused: still no rate
    assert _text(page, "rate") == "—" and _text(page, "eta") == "—"
    assert page.locator(".stepper [data-stage=processing]").inner_text().strip().endswith("paused")
    assert page.title().startswith(tuple(f"{n}% · Paused" for n in range(101)))

    job.refresh_from_db()
    assert job.status == JobStatus.PAUSED


def test_run_again_with_the_same_settings(page, live_server, login, alice, job_driver):
    first = make_job(
        alice,
        "name,text\nann,x\nbob,y\ncy,z\n",
        params={"template": "{name} once more", "output_column": "greeting"},
        name="greetings",
        concurrency=2,
    )
    login()
    page.goto(f"{live_server.url}/jobs/{first.public_id}/")
    wait_for_status(page, "Completed")

    page.get_by_role("button", name="Run again with the same settings…").click()
    page.wait_for_url(re.compile(r"/jobs/new/\?draft=.+&from=" + first.public_id))
    assert "Settings copied from greetings" in _text(page, "copied-from")
    assert page.get_by_test_id("row-count").inner_text() == "3"
    assert page.locator("select[name=processor]").input_value() == "template"
    assert page.locator("textarea[name=param-template]").input_value() == "{name} once more"
    assert page.locator("input[name=param-output_column]").input_value() == "greeting"
    assert page.get_by_label("Job name").input_value() == "greetings (again)"
    assert page.get_by_label("Concurrency").input_value() == "2"

    page.get_by_test_id("start").click()
    page.wait_for_url(re.compile(r"/jobs/job_[^/]+/$"))
    assert first.public_id not in page.url
    wait_for_status(page, "Completed")
    second = Job.objects.exclude(pk=first.pk).get(owner=alice)
    assert second.name == "greetings (again)"
    assert second.params == first.params and second.concurrency == 2
    # No leftover "created: queued." banner on the new job's page.
    assert "created:" not in page.content()
    page.wait_for_function(
        "() => document.querySelector('#results').innerText.includes('ann once more')"
    )


def test_failed_rows_download_and_reasons(
    page, live_server, login, alice, failing_rows, job_driver, tmp_path
):
    job = make_job(alice, _with_failures(), name="some-fail", params={"template": "{name} ok"})
    login()
    page.goto(f"{live_server.url}/jobs/{job.public_id}/")
    wait_for_status(page, "Completed with failures")
    page.reload()
    job.refresh_from_db()
    assert job.failed == 21 and job.succeeded == 39

    table = page.get_by_test_id("failure-reasons")
    rows = [
        [cell.strip() for cell in row.locator("td").all_inner_texts()]
        for row in table.locator("tbody tr").all()
    ]
    assert rows == [[QUOTA, "15"], [LANGUAGE, "6"]]
    stepper_end = page.locator(".stepper [aria-current=step]").inner_text()
    assert "Completed with failures" in stepper_end
    assert "CSV neutralises" not in page.content()  # the note is in words, not jargon
    assert "gets a leading" in _text(page, "csv-note")
    screenshot(page, "job-detail-failures.png")

    with page.expect_download() as info:
        page.get_by_role("link", name="Failed rows only, CSV").click()
    path = tmp_path / "failed.csv"
    info.value.save_as(path)
    got = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
    assert len(got) == 21
    assert {row["_status"] for row in got} == {"failed"}
    assert sum(row["_error"] == QUOTA for row in got) == 15

    with page.expect_download() as info:
        page.get_by_test_id("download-json-all").click()
    assert info.value.suggested_filename.endswith(".json")


# The innermost elements sticking out on the right, to say which one makes the page wide.
WIDEST = """
[...document.querySelectorAll('body *')]
  .filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)
  .filter(e => {
    for (let a = e.parentElement; a && a !== document.body; a = a.parentElement)
      if (getComputedStyle(a).overflowX !== 'visible') return false;
    return true;
  })
  .filter(e => ![...e.children].some(c => c.getBoundingClientRect().right > window.innerWidth + 1))
  .slice(0, 4)
  .map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + '.' + [...e.classList].join('.')
       + ' ' + Math.round(e.getBoundingClientRect().right))
"""


def _phone_login(browser, live_server):
    context = browser.new_context(viewport=PHONE)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{live_server.url}/accounts/login/")
    page.get_by_label("Username").fill("alice")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server.url}/")
    return context, page


def _pages(live_server, alice) -> dict[str, str]:
    """Every page a person can reach, with long names and a finished job with failures."""
    from apikeys import services as key_services
    from jobs import creation, drafts
    from tests.conftest import csv_upload, drive

    long_name = "quarterly-customer-feedback-export-from-the-crm-" * 2
    done = drive(make_job(alice, _with_failures(), name=long_name, params={"template": "{name}"}))
    assert done.failed
    text = "id,a_rather_long_column_name,another_long_column_name_here,review\n" + "".join(
        f"{i},{'x' * 60},{'y' * 60},I liked item {i} more than I thought I would\n"
        for i in range(20)
    )
    token, _ = drafts.create(alice, csv_upload(text))
    report = creation.Source(upload=csv_upload(text)).report(max_rows=1000)
    assert report.row_count == 20
    drafts.save_report(alice, token, report)
    key_services.create_key(alice, name="a-key-with-a-fairly-long-name-for-a-phone")
    base = live_server.url
    return {
        "jobs": f"{base}/",
        "jobs filtered": f"{base}/?q=quarterly&status=partial&processor=template",
        "new job": f"{base}/jobs/new/",
        "new job preview": f"{base}/jobs/new/?draft={token}",
        "job": f"{base}/jobs/{done.public_id}/",
        "job failed rows": f"{base}/jobs/{done.public_id}/?failed=1",
        "cancel": f"{base}/jobs/{done.public_id}/cancel/",
        "delete": f"{base}/jobs/{done.public_id}/delete/",
        "keys": f"{base}/keys/",
        "settings": f"{base}/settings/",
        "credentials": f"{base}/settings/credentials/",
        "not found": f"{base}/jobs/job_nothing_here/",
    }


def test_no_horizontal_scroll_at_390px_on_every_page(
    browser, live_server, media, alice, failing_rows
):
    urls = _pages(live_server, alice)
    context, page = _phone_login(browser, live_server)
    try:
        nav = page.locator("header.topbar").bounding_box()
        assert nav["height"] <= 60, f"the phone nav takes {nav['height']}px of height"
        wide = {}
        for name, url in urls.items():
            page.goto(url)
            width = page.evaluate("document.documentElement.scrollWidth")
            inner = page.evaluate("window.innerWidth")
            if width > inner:
                wide[name] = (width, page.evaluate(WIDEST))
        # The keys page right after creating a key, its plaintext shown once.
        page.goto(urls["keys"])
        page.get_by_label("Name").fill("phone-key")
        page.get_by_role("button", name="Create key").click()
        page.locator("#new-key").wait_for()
        width = page.evaluate("document.documentElement.scrollWidth")
        if width > PHONE["width"]:
            wide["new key"] = (width, page.evaluate(WIDEST))
        assert not wide, f"wider than the {PHONE['width']}px phone: {wide}"
        # Phone screenshots show what fits on the screen, plus the failures section.
        page.goto(urls["job"])
        screenshot(page, "phone-job-detail.png", full_page=False)
        page.locator("#downloads").scroll_into_view_if_needed()
        screenshot(page, "phone-job-failures.png", full_page=False)
        page.goto(urls["jobs"])
        screenshot(page, "phone-jobs-list.png", full_page=False)
        page.goto(urls["new job preview"])
        screenshot(page, "phone-new-job-preview.png", full_page=False)
    finally:
        context.close()


def test_every_control_has_a_name(page, live_server, login, alice, failing_rows):
    urls = _pages(live_server, alice)
    login()
    missing = {}
    for name, url in urls.items():
        page.goto(url)
        snapshot = page.locator("body").aria_snapshot()
        unnamed = [line.strip() for line in snapshot.splitlines() if UNNAMED.match(line)]
        if unnamed:
            missing[name] = unnamed
        assert "- button" in snapshot or "- link" in snapshot  # the snapshot saw the page
    assert not missing, missing


def test_png_renamed_csv_is_refused_at_step_one(page, live_server, login):
    login()
    page.goto(f"{live_server.url}/jobs/new/")
    png = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(200)
    page.get_by_label("Choose a CSV or JSONL file").set_input_files(
        {"name": "photo.csv", "mimeType": "text/csv", "buffer": png}
    )
    page.get_by_role("button", name="Upload and preview").click()
    page.wait_for_load_state()
    assert page.locator("[aria-current=step]").inner_text().startswith("1.")
    body = page.locator("main").inner_text()
    assert body.count("This is a PNG image") == 1, body
    assert page.get_by_test_id("start").count() == 0


def test_notification_when_a_watched_job_finishes(browser, live_server, media, alice, job_driver):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    # Stand in for the browser's Notification API and record what the page shows.
    context.add_init_script(
        """
        window.__notes = [];
        window.__asked = 0;
        window.Notification = function (title, options) {
          window.__notes.push([title, options.body]);
        };
        window.Notification.permission = "default";
        window.Notification.requestPermission = function () {
          window.__asked += 1; window.Notification.permission = "granted";
          return Promise.resolve("granted");
        };
        """
    )
    page = context.new_page()
    try:
        job = make_job(alice, _big(3000), name="tell-me")
        page.goto(f"{live_server.url}/accounts/login/")
        page.get_by_label("Username").fill("alice")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{live_server.url}/")
        page.goto(f"{live_server.url}/jobs/{job.public_id}/")
        assert page.evaluate("window.__asked") == 0  # never asked before a click
        page.get_by_role("button", name="Notify me when it finishes").click()
        page.get_by_role("button", name="Notifications on").wait_for()
        assert page.evaluate("window.__asked") == 1
        wait_for_status(page, "Completed")
        wait_for(lambda: page.evaluate("window.__notes.length") == 1, message="a notification")
        title, body = page.evaluate("window.__notes[0]")
        assert title == "tell-me: completed"
        assert body == "3,000 succeeded, 0 failed of 3,000 rows."
        assert page.title().startswith("Completed · tell-me")

        # The jobs list does the same for every job on it that finishes while it is open.
        other = make_job(alice, _big(3000), name="tell-me-too")
        page.goto(f"{live_server.url}/")
        page.get_by_role("button", name="Notify me when jobs finish").click()
        page.wait_for_function("() => /^1 active · /.test(document.title)", timeout=30_000)
        page.locator(f"tr[data-job='{other.public_id}']").get_by_text("Completed").wait_for(
            timeout=60_000
        )
        wait_for(lambda: page.evaluate("window.__notes.length") == 1, message="a notification")
        assert page.evaluate("window.__notes[0][0]") == "tell-me-too: completed"
        assert not page.title().startswith("1 active")
    finally:
        context.close()


def test_sample_run_picks_the_column_marks_errors_and_fits(page, live_server, login):
    long = "This chair is comfortable and sturdy and looks great in the living room. " * 3
    text = "id,customer,review_body,stars\n" + "".join(
        f"{i},customer number {i},{long}{i},{i % 5}\n" for i in range(12)
    )
    login()
    page.goto(f"{live_server.url}/jobs/new/")
    page.get_by_label("Choose a CSV or JSONL file").set_input_files(
        {"name": "reviews.csv", "mimeType": "text/csv", "buffer": text.encode()}
    )
    page.get_by_role("button", name="Upload and preview").click()
    page.wait_for_url(re.compile(r"/jobs/new/\?draft="))
    page.get_by_test_id("processor").first.select_option("sentiment")
    column = page.get_by_label("Column for “text”")
    column.wait_for()
    assert column.input_value() == "review_body"  # guessed from the name

    # No column chosen: the message says which field, and the field itself is marked.
    column.select_option("")
    page.get_by_role("button", name="Try on the first 10 rows").click()
    error = page.get_by_test_id("sample-error")
    error.wait_for()
    assert "Please correct the fields marked above first." in error.inner_text()
    assert error.get_by_role("link", name="Column for “text”").count() == 1
    column = page.get_by_label("Column for “text”")
    assert column.get_attribute("aria-invalid") == "true"

    column.select_option("review_body")
    page.get_by_role("button", name="Try on the first 10 rows").click()
    table = page.locator("#sample table")
    table.wait_for()
    assert page.get_by_label("Column for “text”").get_attribute("aria-invalid") is None
    headers = [h.strip().lower() for h in table.locator("thead th").all_inner_texts()]
    assert headers == ["row", "review_body", "sentiment_label", "sentiment_score", "error"]
    # Every column is on screen: nothing cut off, nothing to scroll sideways to.
    wrap = page.locator("#sample .table-wrap")
    assert wrap.evaluate("e => e.scrollWidth <= e.clientWidth")
    # A CPU processor's 10 rows are mostly its start-up: no time is claimed from them.
    assert page.get_by_test_id("sample-estimate").count() == 0
    page.locator("#sample").scroll_into_view_if_needed()
    screenshot(page, "new-job-sample.png")


def test_rows_failing_while_the_page_is_open_show_up_in_the_failed_rows_section(
    page, live_server, login, alice, failing_rows, job_driver
):
    # The section was drawn once, before the first failure, and said "No row has failed so far"
    # with no failed-rows download until the job ended, while the counters above it climbed.
    lines = ["name,text,fail", *(f"p{i},w{i},{'late' if i >= 1500 else ''}" for i in range(3000))]
    job = make_job(alice, "\n".join(lines) + "\n", name="late-fail", params={"template": "{name}"})
    login()
    page.goto(f"{live_server.url}/jobs/{job.public_id}/")
    assert "No row has failed so far." in page.locator("#downloads").inner_text()
    page.wait_for_function(
        "() => /Failed rows \\([\\d,]+\\)/.test(document.querySelector('#failed-title').innerText)",
        timeout=60_000,
    )
    assert _text(page, "status") == "Processing"  # while it runs, not at the end
    assert page.get_by_role("link", name="Failed rows only, CSV").is_visible()
    assert "late" in page.get_by_test_id("failure-reasons").inner_text()
    wait_for_status(page, "Completed with failures")
    # The end reloads it too, even right after a reload for rows failing.
    page.wait_for_function(
        "() => document.querySelector('#failed-title').innerText === 'Failed rows (1,500)'"
    )
