"""What the job page and the jobs list say against the job's own numbers, in states a quick run
never shows: rows still finishing after a cancel, every row failed, a pause with its reason."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from jobs.ingest import loading
from jobs.models import Job
from tests.conftest import make_job, rows_text, set_published

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def _cancelled_with_rows_in_a_request(alice) -> Job:
    job = make_job(alice, rows_text(40), name="cancel-mid")
    loading.ingest(job.pk)  # rows for the preview, which still shows some running
    now = timezone.now()
    return set_published(
        job,
        status="cancelled",
        total=40,
        pending=0,
        running=4,
        succeeded=2,
        failed=2,
        cancelled=32,
        started_at=now - timedelta(seconds=5),
        finished_at=now,
    )


def _section(body: str) -> str:
    return body.split('<section id="progress"', 1)[1].split("</section>", 1)[0]


def test_a_cancelled_job_is_watched_until_its_started_rows_finish(client_alice, alice):
    # The page stopped polling at the cancel and kept the counts of that moment for good
    # ("Started 12", the failed rows of then) while the rows in a request came back.
    job = _cancelled_with_rows_in_a_request(alice)
    detail = reverse("jobs:detail", args=[job.public_id])
    poll = reverse("jobs:progress", args=[job.public_id])

    body = client_alice.get(detail).content.decode()
    section = _section(body)
    assert 'hx-trigger="every 1s"' in section
    # The preview reloads as they come back (their rows still read "running" there).
    results = body.split('<section id="results"', 1)[1].split(">", 1)[0]
    assert "job-progressed from:body" in results
    seen = section.split("?seen=", 1)[1].split('"', 1)[0]
    assert "4 rows started before it stopped still finish" in section
    # The API refuses a retry until they have finished: the page does not offer one.
    assert 'id="btn-retry"' not in section
    answer = client_alice.get(poll, {"seen": seen}, **HTMX)
    assert answer.status_code == 200
    listed = client_alice.get(reverse("jobs:list_rows"), **HTMX)
    assert listed.status_code == 200 and 'hx-trigger="every 2s"' in listed.content.decode()

    set_published(job, running=0, succeeded=5, failed=3)
    answer = client_alice.get(poll, {"seen": seen}, **HTMX)
    assert answer.status_code == 286
    text = answer.content.decode()
    assert 'data-testid="succeeded">5<' in text and 'data-testid="failed">3<' in text
    assert 'data-testid="running">0<' in text
    assert 'id="btn-retry"' in text
    assert "still finish" not in text
    # The last answer reloads everything, unthrottled: a "job-failed" dropped by the downloads'
    # throttle left "Failed rows (2)" there for good, under counters saying 3.
    assert answer["HX-Trigger"] == "job-changed"
    assert client_alice.get(reverse("jobs:list_rows"), **HTMX).status_code == 286


@pytest.mark.parametrize(
    ("succeeded", "label", "announced"),
    [
        (0, "Every row failed", "Job finished: every row failed."),
        (20, "Completed with failures", "Job finished: completed with failures."),
    ],
)
def test_a_partial_job_is_named_alike_everywhere(client_alice, alice, succeeded, label, announced):
    # Every row of a job failed: the stepper said "Every row failed", while the badge, the tab
    # title, the list and the screen reader's announcement said "Partial".
    job = make_job(alice, rows_text(30), name="all-fail")
    job = set_published(
        job,
        status="partial",
        total=30,
        pending=0,
        succeeded=succeeded,
        failed=30 - succeeded,
        started_at=timezone.now() - timedelta(seconds=3),
        finished_at=timezone.now(),
    )
    section = _section(
        client_alice.get(reverse("jobs:detail", args=[job.public_id])).content.decode()
    )
    assert f'data-testid="status">{label}</span>' in section
    assert f'data-status-label="{label}"' in section  # the tab title's
    assert f'<span class="step-label">{label}</span>' in section
    assert "Partial" not in section

    poll = client_alice.get(
        reverse("jobs:progress", args=[job.public_id]), {"seen": "processing-0"}, **HTMX
    )
    assert announced in poll.content.decode()

    listed = client_alice.get(reverse("jobs:list")).content.decode()
    assert f'badge-partial">{label}</span>' in listed
    assert f'data-status-label="{label}"' in listed  # its notification's


def test_a_paused_job_says_why_once(client_alice, alice):
    # "Paused: Auto-paused: … Resumes soon after 21:56:40 UTC. It resumes by itself soon after
    # 21:56 UTC.": the badge's word twice, the time twice.
    job = make_job(alice, rows_text(20), name="rate-limited")
    resume_at = timezone.now() + timedelta(seconds=30)
    reason = (
        "Auto-paused: the service kept answering 429 (rate limited). Resumes soon after "
        f"{resume_at:%H:%M:%S} UTC."
    )
    job = set_published(
        job, status="paused", total=20, pending=20, pause_reason=reason, resume_at=resume_at
    )
    section = _section(
        client_alice.get(reverse("jobs:detail", args=[job.public_id])).content.decode()
    )
    notice = section.split('data-testid="pause-reason">', 1)[1].split("</p>", 1)[0]
    assert notice == reason

    job = set_published(job, pause_reason="Paused by alice.", resume_at=None)
    section = _section(
        client_alice.get(reverse("jobs:detail", args=[job.public_id])).content.decode()
    )
    assert 'data-testid="pause-reason">Paused by alice.</p>' in section


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_a_job_that_ended_before_its_input_was_read_says_so(client_alice, alice, status):
    # An input refused by the worker (or a cancel while queued) showed "0 of 0 rows processed
    # (0.0%)", a preview promising rows "once the input has been read", and "0 / 0 / 0".
    job = make_job(alice, rows_text(3), name="never-read")
    job = set_published(job, status=status, finished_at=timezone.now())
    body = client_alice.get(reverse("jobs:detail", args=[job.public_id])).content.decode()
    assert "No rows: the job ended before its input file was read." in _section(body)
    assert "0 of 0" not in body
    results = body.split('<section id="results"', 1)[1].split("</section>", 1)[0]
    assert "No rows: the job ended before its input file was read." in results
    assert "they appear once" not in results
    listed = client_alice.get(reverse("jobs:list")).content.decode()
    row = listed.split(f'data-job="{job.public_id}"', 1)[1].split("</tr>", 1)[0]
    assert "No rows read" in row and '<span title="total">0</span>' not in row


def test_started_rows_beyond_the_concurrency_show_the_limit(client_alice, alice):
    # "Started 12" at concurrency 4 read as a broken limit: the loop hands each thread rows
    # ahead, so the page says, in sight and not in a tooltip, how many of them run at once.
    job = make_job(alice, rows_text(60), name="ahead", concurrency=4)
    job = set_published(job, status="processing", total=60, pending=48, running=12)
    section = _section(
        client_alice.get(reverse("jobs:detail", args=[job.public_id])).content.decode()
    )
    started = section.split('data-testid="in-flight">', 1)[1].split("</dd>", 1)[0]
    assert started == '12<span class="counter-note" data-testid="at-once">at most 4 at once</span>'

    job = set_published(job, pending=57, running=3)
    section = _section(
        client_alice.get(reverse("jobs:detail", args=[job.public_id])).content.decode()
    )
    assert 'data-testid="in-flight">3</dd>' in section


def test_a_failed_job_with_rows_left_running_does_not_promise_their_results(client_alice, alice):
    # Only a cancel hands rows in a request over to finish; a failed job's leftovers are cancelled.
    job = set_published(_cancelled_with_rows_in_a_request(alice), status="failed")
    section = _section(
        client_alice.get(reverse("jobs:detail", args=[job.public_id])).content.decode()
    )
    assert "still finish" not in section
