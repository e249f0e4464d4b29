"""The job page's live part written without the template engine (jobs/progress_html.py) gives the
template's bytes (templates/jobs/detail.html, partial "progress") for jobs in every state."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.template.loader import render_to_string
from django.test import RequestFactory
from django.utils import timezone

from jobs import progress_html, views
from jobs.models import JobStatus
from tests.conftest import make_job, rows_text

_TOKEN = re.compile(r'name="csrfmiddlewaretoken" value="[^"]*"')


def _same_token(html: str) -> str:
    # Each render masks the CSRF secret anew: the value differs, never the markup around it.
    return _TOKEN.sub('name="csrfmiddlewaretoken" value="…"', html)


def _request(user):
    request = RequestFactory().get("/")
    request.user = user
    return request


STATES = {
    "queued": dict(status=JobStatus.QUEUED, total=0, pending=0),
    "processing": dict(status=JobStatus.PROCESSING, succeeded=1234, failed=5, running=8),
    "processing-with-rate": dict(status=JobStatus.PROCESSING, succeeded=600, running=4),
    "paused": dict(
        status=JobStatus.PAUSED,
        succeeded=10,
        pause_reason="The service said <slow down> & wait",
        resume_in=timedelta(minutes=5),
    ),
    "paused-no-reason": dict(status=JobStatus.PAUSED, succeeded=3),
    "cancelled": dict(status=JobStatus.CANCELLED, succeeded=10, cancelled=980, finished=True),
    "failed": dict(
        status=JobStatus.FAILED,
        error_code="input_invalid",
        error_message='Row 3: "x" <b>bad</b>',
        finished=True,
    ),
    "completed": dict(status=JobStatus.COMPLETED, succeeded=1000, pending=0, finished=True),
    "partial": dict(status=JobStatus.PARTIAL, succeeded=990, failed=10, pending=0, finished=True),
}


@pytest.mark.parametrize("state", list(STATES))
@pytest.mark.parametrize("extra", ["plain", "announce-and-error"])
def test_the_fragment_is_the_templates_byte_for_byte(alice, state, extra):
    spec = dict(STATES[state])
    job = make_job(alice, rows_text(3), name='Q3 "leads" <script>alert(1)</script>')
    now = timezone.now()
    job.total = spec.pop("total", 1000)
    job.pending = spec.pop("pending", job.total - spec.get("succeeded", 0) - spec.get("failed", 0))
    resume_in = spec.pop("resume_in", None)
    finished = spec.pop("finished", False)
    for name, value in spec.items():
        setattr(job, name, value)
    job.pending -= job.cancelled + job.running
    job.started_at = now - timedelta(minutes=3, seconds=7) if job.total else None
    job.resume_at = now + resume_in if resume_in else None
    if finished:
        job.finished_at = now - timedelta(seconds=5)
        job.expires_at = now + timedelta(days=30)
    start = now.timestamp() - 60
    job.samples = [[start + i, i * 10] for i in range(61)] if job.started_at else []
    job.last_event_id = 7
    context = views._progress_context(job, announce="Job paused." if extra != "plain" else "")
    context["action_error"] = "Cannot pause a <finished> job." if extra != "plain" else ""
    request = _request(alice)
    expected = render_to_string("jobs/detail.html#progress", context, request)
    assert _same_token(progress_html.render(request, context)) == _same_token(expected)
