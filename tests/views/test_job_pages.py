"""The jobs list, the job page, their partials and actions: who may see what, and what they show."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from jobs import runner, states
from jobs.ingest import loading
from jobs.models import Job, JobStatus
from jobs.processors import RowError
from jobs.processors.template import TemplateProcessor
from tests.conftest import make_job, rows_text

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def job(alice):
    return make_job(alice, rows_text(5))


def _urls(job: Job) -> dict[str, str]:
    pid = job.public_id
    return {
        "detail": reverse("jobs:detail", args=[pid]),
        "progress": reverse("jobs:progress", args=[pid]),
        "rows": reverse("jobs:rows", args=[pid]),
        "events": reverse("jobs:events", args=[pid]),
        "downloads": reverse("jobs:downloads", args=[pid]),
        "download": reverse("jobs:download", args=[pid, "csv"]),
        "cancel": reverse("jobs:cancel", args=[pid]),
        "delete": reverse("jobs:delete", args=[pid]),
    }


GET_PAGES = ["detail", "progress", "rows", "events", "downloads", "download", "cancel", "delete"]
POST_ACTIONS = ["pause", "resume", "cancel", "retry", "delete", "again"]


# --- who may see what ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", GET_PAGES)
def test_anonymous_is_sent_to_login(client, job, name):
    url = _urls(job)[name]
    response = client.get(url, **HTMX)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.parametrize("name", GET_PAGES)
def test_another_users_job_is_not_found(client_bob, job, name):
    response = client_bob.get(_urls(job)[name], **HTMX)
    assert response.status_code == 404
    assert b"Not found" in response.content
    assert job.name.encode() not in response.content


@pytest.mark.parametrize("action", POST_ACTIONS)
def test_another_user_cannot_act_on_a_job(client_bob, job, action):
    response = client_bob.post(
        reverse(f"jobs:{action}", args=[job.public_id]), {"confirm": "yes"}, **HTMX
    )
    assert response.status_code == 404
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED
    assert Job.objects.filter(pk=job.pk).exists()


@pytest.mark.parametrize("action", POST_ACTIONS)
def test_anonymous_cannot_act_on_a_job(client, job, action):
    response = client.post(reverse(f"jobs:{action}", args=[job.public_id]), {"confirm": "yes"})
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED


def test_a_missing_job_is_the_same_404(client_alice):
    response = client_alice.get(reverse("jobs:detail", args=["job_nope"]))
    assert response.status_code == 404
    assert b"Not found" in response.content


@pytest.mark.parametrize("name", ["jobs:list", "jobs:list_rows", "jobs:new"])
def test_list_and_new_need_login(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


# --- jobs list -----------------------------------------------------------------------------------


def test_empty_list_invites_an_upload(client_alice):
    response = client_alice.get(reverse("jobs:list"))
    assert response.status_code == 200
    assert "No jobs yet — upload a CSV" in response.content.decode()


def test_list_shows_own_jobs_only(client_alice, alice, bob):
    mine = make_job(alice, rows_text(3), name="alice-report")
    make_job(bob, rows_text(3), name="bob-secret")
    body = client_alice.get(reverse("jobs:list")).content.decode()
    assert "alice-report" in body
    assert "bob-secret" not in body
    assert reverse("jobs:detail", args=[mine.public_id]) in body
    assert 'class="badge badge-queued"' in body
    assert "<progress" in body


def test_list_polls_while_a_job_is_active_and_stops_after(client_alice, alice, run_job):
    job = make_job(alice, rows_text(3), name="live")
    body = client_alice.get(reverse("jobs:list")).content.decode()
    assert 'hx-trigger="every 2s"' in body

    partial = client_alice.get(reverse("jobs:list_rows"), **HTMX)
    assert partial.status_code == 200
    assert partial.content.decode().lstrip().startswith("<tbody")
    assert "live" in partial.content.decode()

    run_job(job)
    partial = client_alice.get(reverse("jobs:list_rows"), **HTMX)
    assert partial.status_code == 286
    text = partial.content.decode()
    assert "Completed" in text
    assert "hx-trigger" not in text
    assert '3</span> / <span class="bad" title="failed">0</span> / <span title="total">3' in text


def test_list_filters_by_status(client_alice, alice, run_job):
    done = make_job(alice, rows_text(2), name="finished-one")
    run_job(done)
    make_job(alice, rows_text(2), name="waiting-one")
    body = client_alice.get(reverse("jobs:list"), {"status": "completed"}).content.decode()
    assert "finished-one" in body and "waiting-one" not in body
    body = client_alice.get(reverse("jobs:list"), {"status": "active"}).content.decode()
    assert "waiting-one" in body and "finished-one" not in body
    bad = client_alice.get(reverse("jobs:list"), {"status": "bogus"})
    assert bad.status_code == 400
    assert "Unknown status" in bad.content.decode()


def test_list_paginates_25_per_page(client_alice, alice, settings):
    settings.BATCHHUB_MAX_ACTIVE_JOBS = 100
    for i in range(27):
        make_job(alice, rows_text(1), name=f"job-number-{i:02d}")
    first = client_alice.get(reverse("jobs:list")).content.decode()
    assert first.count('class="job-row') == 25
    assert "Page 1 of 2" in first
    assert "job-number-26" in first  # newest first
    second = client_alice.get(reverse("jobs:list"), {"page": 2}).content.decode()
    assert second.count('class="job-row') == 2
    assert "job-number-00" in second


# --- job page ------------------------------------------------------------------------------------


def test_detail_of_a_queued_job_polls_and_offers_cancel(client_alice, job):
    body = client_alice.get(_urls(job)["detail"]).content.decode()
    assert 'hx-trigger="every 1s"' in body
    assert 'aria-live="polite"' in body
    assert 'aria-current="step"' in body
    assert "Cancel job" in body
    assert "hx-confirm=" in body
    assert "Pause" not in body  # a queued job cannot be paused
    assert "Retry failed rows" not in body
    assert reverse("jobs:download", args=[job.public_id, "csv"]) in body
    assert reverse("jobs:download", args=[job.public_id, "json"]) in body
    # Nothing has failed yet: no failed-rows download to offer.
    assert "?status=failed" not in body
    assert "No row has failed so far." in body
    # A queued job says what it waits for, and shows no rate or ETA yet.
    assert "Waiting for a worker to read the input file." in body
    assert 'data-testid="rate">—<' in body
    # Its rows are not counted yet: not "0 of 0 rows processed".
    assert "the rows are counted as the file is read" in body
    assert "of <strong" not in body


def test_started_rows_are_not_called_in_flight(client_alice, alice):
    # An I/O job's loop hands its threads rows ahead: more are started than run at once, so the
    # page says "started" and how many run at a time, never "in flight".
    job = make_job(alice, rows_text(50), concurrency=4)
    Job.objects.filter(pk=job.pk).update(status="processing", total=50, running=12, pending=38)
    body = client_alice.get(_urls(job)["detail"]).content.decode()
    assert "<dt>Started</dt>" in body and 'data-testid="in-flight">12<' in body
    assert "4 at a time run, the others wait their turn" in body
    assert "In flight" not in body
    assert 'Started <strong data-testid="running">12</strong>' in body  # the bar's legend


def test_progress_partial_while_active_then_286_when_done(client_alice, job, run_job):
    url = _urls(job)["progress"]
    response = client_alice.get(url, {"seen": "queued-0"}, **HTMX)
    assert response.status_code == 200
    text = response.content.decode()
    assert text.lstrip().startswith('<section id="progress"')
    assert "<html" not in text
    assert 'hx-trigger="every 1s"' in text
    assert "HX-Trigger" not in response  # nothing changed since "seen"

    run_job(job)
    response = client_alice.get(url, {"seen": "queued-0"}, **HTMX)
    assert response.status_code == 286
    text = response.content.decode()
    assert "hx-trigger" not in text.split("</section>")[0].split(">")[0]
    assert 'data-testid="status">Completed' in text
    assert 'data-testid="done">5</strong>' in text
    assert response["HX-Trigger"] == "job-changed"
    assert "Job completed." in text  # the live region's announcement


def _trigger_attr(text: str) -> str:
    return text.split('hx-trigger="', 1)[1].split('"', 1)[0]


def test_the_failed_rows_section_follows_rows_failing_while_the_page_is_open(
    client_alice, alice, settings
):
    # Opened before any row failed, the section said "No row has failed so far" and offered no
    # failed-rows download until the job ended, while the counters above it showed hundreds.
    settings.BATCHHUB_CHUNK_ROWS = 100
    # "d" formats numbers only and CSV cells are text: every row fails.
    job = make_job(alice, rows_text(300), params={"template": "{name:d}"}, concurrency=1)
    loading.ingest(job.pk)
    urls = _urls(job)
    cache.clear()
    page = client_alice.get(urls["detail"]).content.decode()
    assert "No row has failed so far." in page
    downloads = page.split('id="downloads-watch"', 1)[1]
    assert "job-failed from:body" in _trigger_attr(downloads)
    seen = page.split("?seen=", 1)[1].split('"', 1)[0]

    runner.work_once(job.pk)  # rows 1 to 100 fail
    response = client_alice.get(urls["progress"], {"seen": seen}, **HTMX)
    assert response["HX-Trigger"] == "job-progressed, job-failed"
    section = client_alice.get(urls["downloads"], **HTMX).content.decode()
    assert "Failed rows (100)" in section
    assert "Failed rows only, CSV" in section
    assert "No row has failed" not in section

    # Nothing new failed since: the section is not asked for again.
    seen = response.content.decode().split("?seen=", 1)[1].split('"', 1)[0]
    response = client_alice.get(urls["progress"], {"seen": seen}, **HTMX)
    assert "HX-Trigger" not in response


def test_the_page_reloads_results_as_rows_finish_and_the_timeline_only_on_events(
    client_alice, alice, settings, django_assert_num_queries
):
    settings.BATCHHUB_CHUNK_ROWS = 100
    job = make_job(alice, rows_text(300), concurrency=1)  # one loop: chunks of 100 rows
    loading.ingest(job.pk)
    job.refresh_from_db()
    urls = _urls(job)
    cache.clear()  # no marker an earlier test's user (the same id) left behind
    page = client_alice.get(urls["detail"]).content.decode()
    seen = page.split("?seen=", 1)[1].split('"', 1)[0]
    status, done, event, failed = seen.split("-")
    assert (status, done, failed) == ("processing", "0", "0") and int(event) > 0
    # Nothing moved: no event, so no other part of the page asks for anything. A poll is one
    # query (the session's user comes from its cache entry, the page load wrote it): the job with
    # its newest timeline entry, its live status not being published here.
    with django_assert_num_queries(1):
        response = client_alice.get(urls["progress"], {"seen": seen}, **HTMX)
    assert "HX-Trigger" not in response
    # No row done yet: the results preview listens for progress too.
    rows = client_alice.get(urls["rows"], **HTMX).content.decode()
    assert _trigger_attr(rows) == "job-changed from:body, job-progressed from:body"

    runner.work_once(job.pk)  # one chunk: rows 1 to 100, the preview's 50 among them
    response = client_alice.get(urls["progress"], {"seen": seen}, **HTMX)
    assert response["HX-Trigger"] == "job-progressed"  # the results reload, the timeline does not
    seen = response.content.decode().split("?seen=", 1)[1].split('"', 1)[0]
    assert seen == f"processing-100-{event}-0"
    # The preview's rows are final now: it no longer reloads on progress, only on job-changed.
    rows = client_alice.get(urls["rows"], **HTMX).content.decode()
    assert rows.count('class="row-succeeded"') == 50
    assert _trigger_attr(rows) == "job-changed from:body"
    # The failed-only view can still gain rows while the job runs.
    failed = client_alice.get(urls["rows"], {"failed": "1"}, **HTMX).content.decode()
    assert "job-progressed" in _trigger_attr(failed)

    # A timeline entry without a new status (a stalled worker's rows restarted) reloads both.
    states.record(job, "recovered", "No progress for a while: work restarted.")
    response = client_alice.get(urls["progress"], {"seen": seen}, **HTMX)
    assert response["HX-Trigger"] == "job-changed"
    # A page loaded before the event id was in "seen" still gets its progress.
    response = client_alice.get(urls["progress"], {"seen": "processing-0"}, **HTMX)
    assert response["HX-Trigger"] == "job-progressed"
    # A mangled "seen" is ignored rather than a 500.
    response = client_alice.get(urls["progress"], {"seen": "processing-x-"}, **HTMX)
    assert response.status_code == 200 and "HX-Trigger" not in response


def test_detail_of_a_finished_job_shows_counts_results_and_timeline(client_alice, job, run_job):
    run_job(job)
    body = client_alice.get(_urls(job)["detail"]).content.decode()
    assert 'data-testid="status">Completed' in body
    assert 'data-testid="succeeded">5<' in body
    assert 'hx-trigger="every' not in body
    assert "person0!" in body  # template output in the results preview
    assert "Timeline" in body and "Job created from" in body
    assert "Cancel job" not in body
    assert "<svg" in body or "The chart appears" in body


def test_results_partial_failed_only(client_alice, alice, run_job):
    job = make_job(alice, "name,text\nann,x\n,y\n", processor="sentiment", params={})
    run_job(job)
    job.refresh_from_db()
    all_rows = client_alice.get(_urls(job)["rows"], **HTMX)
    assert all_rows.status_code == 200
    assert all_rows.content.decode().lstrip().startswith('<section id="results"')
    failed = client_alice.get(_urls(job)["rows"], {"failed": "1"}, **HTMX).content.decode()
    if job.failed:
        assert failed.count('class="row-failed"') == job.failed
        assert 'class="row-succeeded"' not in failed
    else:
        assert "No failed rows." in failed


def test_download_csv_streams_every_row(client_alice, job, run_job):
    run_job(job)
    response = client_alice.get(_urls(job)["download"])
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert rows[0] == ["name", "text", "output.text", "_status", "_error"]
    assert len(rows) == 6
    assert rows[1] == ["person0", "I love item 0", "person0!", "succeeded", ""]


def test_download_jsonl_failed_only_and_unknown_format(client_alice, job, run_job):
    run_job(job)
    url = reverse("jobs:download", args=[job.public_id, "jsonl"])
    response = client_alice.get(url, {"status": "failed"})
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b""
    assert (
        client_alice.get(reverse("jobs:download", args=[job.public_id, "xlsx"])).status_code == 404
    )


# --- actions -------------------------------------------------------------------------------------


def _processing_job(alice):
    job = make_job(alice, rows_text(30))
    loading.ingest(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.PROCESSING
    return job


def test_pause_and_resume_with_htmx_return_the_partial(client_alice, alice):
    job = _processing_job(alice)
    response = client_alice.post(reverse("jobs:pause", args=[job.public_id]), **HTMX)
    assert response.status_code == 200
    text = response.content.decode()
    assert text.lstrip().startswith('<section id="progress"')
    assert 'data-testid="status">Paused' in text
    assert ">Resume</button>" in text and ">Pause</button>" not in text
    assert response["HX-Trigger"] == "job-changed"
    job.refresh_from_db()
    assert job.status == JobStatus.PAUSED
    assert job.events.filter(type="paused", actor="alice").exists()

    response = client_alice.post(reverse("jobs:resume", args=[job.public_id]), **HTMX)
    job.refresh_from_db()
    assert job.status == JobStatus.PROCESSING
    assert ">Pause</button>" in response.content.decode()


def test_pause_without_js_redirects_with_a_message(client_alice, alice):
    job = _processing_job(alice)
    response = client_alice.post(reverse("jobs:pause", args=[job.public_id]), follow=True)
    assert response.redirect_chain[-1][0] == reverse("jobs:detail", args=[job.public_id])
    assert "Job paused." in response.content.decode()


def test_an_illegal_action_shows_the_reason(client_alice, job):
    response = client_alice.post(reverse("jobs:resume", args=[job.public_id]), follow=True)
    assert "A queued job cannot be resumed." in response.content.decode()
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED
    htmx = client_alice.post(reverse("jobs:pause", args=[job.public_id]), **HTMX)
    assert 'role="alert">A queued job cannot be paused.' in htmx.content.decode()


def test_cancel_without_js_asks_first(client_alice, job):
    url = reverse("jobs:cancel", args=[job.public_id])
    ask = client_alice.post(url)  # the no-JS form posts without "confirm"
    assert ask.status_code == 200
    assert (
        "Cancel “" in ask.content.decode() and 'name="confirm" value="yes"' in ask.content.decode()
    )
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED

    done = client_alice.post(url, {"confirm": "yes"}, follow=True)
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert "Job cancelled." in done.content.decode()


def test_cancel_with_htmx(client_alice, job):
    response = client_alice.post(
        reverse("jobs:cancel", args=[job.public_id]), {"confirm": "yes"}, **HTMX
    )
    assert response.status_code == 200
    assert 'data-testid="status">Cancelled' in response.content.decode()
    assert 'hx-trigger="every' not in response.content.decode()


def test_retry_failed_rows(client_alice, alice, run_job, monkeypatch):
    job = make_job(alice, "name,text\nann,x\nbob,y\n")
    original = TemplateProcessor.process_row

    def flaky(self, row):
        if row.values.get("name") == "bob":
            raise RowError("bob is not welcome")
        return original(self, row)

    monkeypatch.setattr(TemplateProcessor, "process_row", flaky)
    job = run_job(job)
    assert job.status == JobStatus.PARTIAL
    body = client_alice.get(_urls(job)["detail"]).content.decode()
    assert "Retry failed rows" in body
    assert "bob is not welcome" in body

    monkeypatch.setattr(TemplateProcessor, "process_row", original)
    client_alice.post(reverse("jobs:retry", args=[job.public_id]))
    job = run_job(job)
    assert job.status == JobStatus.COMPLETED
    assert job.succeeded == 2


def test_delete_asks_then_deletes(client_alice, job):
    url = reverse("jobs:delete", args=[job.public_id])
    assert "Delete “" in client_alice.get(url).content.decode()
    response = client_alice.post(url, {"confirm": "yes"})
    assert response.status_code == 302
    assert not Job.objects.filter(pk=job.pk).exists()


def test_get_is_not_an_action(client_alice, alice):
    job = _processing_job(alice)
    assert client_alice.get(reverse("jobs:pause", args=[job.public_id])).status_code == 405
    job.refresh_from_db()
    assert job.status == JobStatus.PROCESSING


def test_pages_send_csrf_token_in_hx_headers(client_alice, job):
    body = client_alice.get(_urls(job)["detail"]).content.decode()
    assert 'hx-headers=\'{"X-CSRFToken": "' in body


def test_csrf_is_enforced_on_actions(alice, job):
    c = Client(enforce_csrf_checks=True)
    c.force_login(alice)
    response = c.post(reverse("jobs:cancel", args=[job.public_id]), {"confirm": "yes"})
    assert response.status_code == 403
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED


def test_a_finished_job_states_one_average_and_a_paused_one_its_work_so_far(client_alice, alice):
    # The chart's summary averaged its samples' span, the counter the job's whole span: two
    # averages on one page. Both are now the rows over the time the job worked.
    job = make_job(alice, rows_text(5))
    t = timezone.now().timestamp()
    Job.objects.filter(pk=job.pk).update(
        status="completed",
        total=30_000,
        pending=0,
        succeeded=30_000,
        started_at=timezone.now() - timedelta(minutes=10),
        finished_at=timezone.now(),
        worked_seconds=4.0,
        samples=[[t - 3, 5_000], [t - 2, 15_000], [t - 1, 25_000], [t, 30_000]],
    )
    body = client_alice.get(_urls(job)["detail"]).content.decode()
    assert 'data-testid="average-rate">7,500 rows/s<' in body
    assert "average 7,500 rows per second over 4 s." in body
    assert 'data-testid="duration">4 s<' in body

    Job.objects.filter(pk=job.pk).update(
        status="paused", finished_at=None, pending=10_000, succeeded=20_000, worked_seconds=42.0
    )
    body = client_alice.get(_urls(job)["detail"]).content.decode()
    assert '<dt>Worked for</dt><dd data-testid="worked">42 s<' in body
    assert "Running for" not in body


@pytest.mark.parametrize("status", ["bogus", "FAILED", "failed "])
def test_download_refuses_an_unknown_status_naming_the_allowed_ones(
    client_alice, job, run_job, status
):
    # Read as "all", a mistyped failed-rows link would hand over every row as the failed ones.
    run_job(job)
    url = reverse("jobs:download", args=[job.public_id, "csv"])
    response = client_alice.get(url, {"status": status})
    assert response.status_code == 400
    text = response.content.decode()
    assert "all, succeeded, failed" in text
    assert "person0" not in text


def test_download_empty_status_is_every_row(client_alice, job, run_job):
    run_job(job)
    url = reverse("jobs:download", args=[job.public_id, "csv"])
    response = client_alice.get(url, {"status": ""})
    assert response.status_code == 200
    assert len(b"".join(response.streaming_content).splitlines()) == 6
