"""A processor from an installed package runs a whole job, and shows in the API's list."""

from __future__ import annotations

import csv
import io

import pytest

from jobs import results
from jobs.models import JobStatus
from tests.conftest import drive, make_job
from tests.processors.example_package import ensure_example_installed

pytestmark = pytest.mark.django_db


def test_installed_wordcount_processor_runs_a_job(alice, api_alice):
    ensure_example_installed()
    listed = api_alice.get("/api/v1/processors").json()
    assert "wordcount" in [p["name"] for p in listed]

    job = make_job(
        alice,
        "id,body\n1,the quick brown fox\n2,jumps\n3,over the lazy dog again\n",
        processor="wordcount",
        params={"min_length": 4},
        column_map={"text": "body"},
    )
    job = drive(job)
    assert job.status == JobStatus.COMPLETED
    rows = list(csv.DictReader(io.StringIO(b"".join(results.stream(job, "csv")).decode())))
    assert [(r["words"], r["characters"]) for r in rows] == [("2", "19"), ("1", "5"), ("3", "23")]
