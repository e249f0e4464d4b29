"""The input's format on the job page: a job made from JSON rows sent to the API is named for
what it is, never for the JSONL file it is kept in."""

from __future__ import annotations

import pytest
from django.urls import reverse

from jobs.ingest import loading
from jobs.models import Job
from tests.conftest import make_job, rows_text

pytestmark = pytest.mark.django_db


def test_a_job_of_json_rows_says_so_at_every_step(api_alice, client_alice):
    answer = api_alice.post(
        "/api/v1/jobs",
        {"processor": "template", "params": {"template": "{a}"}, "rows": [{"a": "x"}, {"a": "y"}]},
        format="json",
    )
    assert answer.status_code == 201
    job = Job.objects.get()
    detail = reverse("jobs:detail", args=[job.public_id])

    def meta() -> str:
        body = client_alice.get(detail).content.decode()
        return body.split('class="muted meta"', 1)[1].split("</p>", 1)[0]

    assert 'data-testid="input-format">JSON rows (API)<' in meta()  # queued: was "ROWS"
    loading.ingest(job.pk)
    # Read, the rows were the JSONL file they are kept in: "JSONL, utf-8", a file never sent.
    shown = meta()
    assert 'data-testid="input-format">JSON rows (API)<' in shown
    assert "JSONL" not in shown and "ROWS" not in shown
    body = client_alice.get(detail).content.decode()
    assert "rows.jsonl" not in body.split('id="timeline"', 1)[1]
    assert "Job created from JSON rows sent to the API (2 rows)" in body
    assert "2 rows read (sent to the API as JSON)" in body


def test_an_uploaded_file_keeps_its_format_and_encoding(client_alice, alice):
    job = make_job(alice, rows_text(2))
    loading.ingest(job.pk)
    body = client_alice.get(reverse("jobs:detail", args=[job.public_id])).content.decode()
    assert 'data-testid="input-format">CSV, utf-8<' in body
