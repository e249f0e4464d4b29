"""The numbers the job pages write: every count grouped by thousands, as the rates are, on the
job page in each state, its live partial, the jobs list, the reasons table and the timeline."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from jobs.ingest import loading
from jobs.models import Job, JobEvent, JobStatus, RowStatus
from tests.conftest import make_job, rows_text, set_published
from tests.factories import JobFactory, add_rows

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def _big(alice, **fields) -> Job:
    job = make_job(alice, rows_text(3), name="big")
    now = timezone.now()
    fields = {
        "total": 1_234_567,
        "pending": 0,
        "running": 0,
        "succeeded": 1_000_000,
        "failed": 34_567,
        "cancelled": 200_000,
        "started_at": now - timedelta(minutes=3),
        **fields,
    }
    return set_published(job, **fields)


def _ungrouped(html: str) -> list[str]:
    """Numbers of four digits or more in the text a user reads (dates and times aside)."""
    text = re.sub(r"<[^>]*>", " ", html)
    return re.findall(r"(?<![\d,.:-])\d{4,}(?![\d:-])", text)


def _section(body: str) -> str:
    return body.split('<section id="progress"', 1)[1].split("</section>", 1)[0]


@pytest.mark.parametrize("status", ["processing", "paused", "cancelled", "partial"])
def test_every_count_on_the_job_page_is_grouped_in_every_state(client_alice, alice, status):
    fields = {"status": status}
    if status in ("processing", "paused"):
        fields |= {"pending": 150_000, "running": 50_000, "cancelled": 0, "concurrency": 8}
    else:
        fields |= {"finished_at": timezone.now()}
    job = _big(alice, **fields)
    detail = reverse("jobs:detail", args=[job.public_id])
    poll = reverse("jobs:progress", args=[job.public_id])
    for body in (
        client_alice.get(detail).content.decode(),
        client_alice.get(poll, **HTMX).content.decode(),
    ):
        section = _section(body)
        assert 'data-testid="total">1,234,567<' in section
        assert 'data-testid="done">1,034,567<' in section
        assert 'data-testid="succeeded">1,000,000<' in section
        assert 'data-testid="failed">34,567<' in section
        assert "1,000,000 succeeded, 34,567 failed" in section  # what a notification says
        if status in ("processing", "paused"):
            assert 'data-testid="pending">150,000<' in section
            assert 'data-testid="in-flight">50,000<' in section
        else:
            assert 'data-testid="cancelled-count">200,000<' in section
        assert _ungrouped(section.split(">", 1)[1]) == []  # past the section's own tag


def test_the_failed_rows_count_and_its_reasons_are_grouped(client_alice, alice):
    job = JobFactory(owner=alice, status=JobStatus.PARTIAL, rows=1200, succeeded=0, failed=1200)
    add_rows(job, 1200, status=RowStatus.FAILED, error="HTTP 500", reason="HTTP 500", attempts=1)
    body = client_alice.get(reverse("jobs:detail", args=[job.public_id])).content.decode()
    assert "Failed rows (1,200)" in body
    assert '<td class="num">1,200</td>' in body


def test_the_jobs_list_groups_its_counts(client_alice, alice):
    job = _big(alice, status="partial", finished_at=timezone.now())
    for url in (reverse("jobs:list"), reverse("jobs:list_rows")):
        body = client_alice.get(url, **HTMX).content.decode()
        row = body.split(f'data-job="{job.public_id}"', 1)[1].split("</tr>", 1)[0]
        assert 'title="succeeded">1,000,000<' in row
        assert 'title="failed">34,567<' in row
        assert 'title="cancelled">200,000<' in row
        assert 'title="total">1,234,567<' in row
        # What a notification says adds up, as the job page's does: the cancelled rows too.
        assert "1,000,000 succeeded, 34,567 failed, 200,000 cancelled of 1,234,567 rows." in row


def test_the_timeline_groups_its_counts(alice):
    job = make_job(alice, rows_text(1500))
    loading.ingest(job.pk)
    messages = list(JobEvent.objects.filter(job=job).values_list("message", flat=True))
    assert any("(1,500 rows)" in m for m in messages), messages
    assert any(m.startswith("1,500 rows read") for m in messages), messages


@pytest.mark.parametrize(
    ("worked", "shown"),
    [(7.6, "7 s"), (0.6, "under 1 s"), (125.5, "2 min 05 s")],
)
def test_a_finished_job_states_one_duration(client_alice, alice, worked, shown):
    # The counter cut 7.6 s to "7 s" and the chart's summary rounded it to "over 8 s"; a job
    # of 0.6 s read "Duration 0 s" beside "Average rate 3.3 rows/s".
    job = make_job(alice, rows_text(3))
    t = timezone.now().timestamp()
    job = set_published(
        job,
        status="completed",
        total=1_500,
        pending=0,
        succeeded=1_500,
        started_at=timezone.now() - timedelta(seconds=worked),
        finished_at=timezone.now(),
        worked_seconds=worked,
        samples=[[t - worked / 2, 500], [t, 1_500]],
    )
    body = client_alice.get(reverse("jobs:detail", args=[job.public_id])).content.decode()
    assert f'data-testid="duration">{shown}<' in body
    assert f"rows per second over {shown}." in body


def test_a_job_a_row_short_of_its_end_never_reads_100_percent(client_alice, alice):
    # 999,999 of 1,000,000 rows read "(100.0%)", and the tab's title "100% · Processing".
    job = _big(
        alice,
        status="processing",
        total=1_000_000,
        pending=1,
        succeeded=999_999,
        failed=0,
        cancelled=0,
    )
    body = client_alice.get(reverse("jobs:detail", args=[job.public_id])).content.decode()
    assert "rows processed (99.9%)" in body
    assert 'data-percent="99"' in body
    listed = client_alice.get(reverse("jobs:list")).content.decode()
    assert ">99.9%</progress>" in listed


@pytest.mark.parametrize(
    ("rows", "worked", "shown"),
    [(5, 520.0, "under 0.01"), (10, 40.0, "0.25"), (10, 3.0, "3.3"), (30_000, 4.0, "7,500")],
)
def test_a_finished_job_states_one_average_rate(client_alice, alice, rows, worked, shown):
    # 5 rows in 8 min 40 s read "Average rate 0.0 rows/s" above a chart saying "average 0 rows
    # per second": as if none had run, in two spellings.
    job = make_job(alice, rows_text(3))
    t = timezone.now().timestamp()
    job = set_published(
        job,
        status="partial",
        total=rows,
        pending=0,
        succeeded=0,
        failed=rows,
        started_at=timezone.now() - timedelta(seconds=worked),
        finished_at=timezone.now(),
        worked_seconds=worked,
        samples=[[t - worked, 0], [t - worked / 2, rows // 2], [t, rows]],
    )
    body = client_alice.get(reverse("jobs:detail", args=[job.public_id])).content.decode()
    assert f'data-testid="average-rate">{shown} rows/s<' in body
    assert f"average {shown} rows per second over" in body
