"""Migration 0004 (row storage v2) from a database holding jobs in the old layout.

The database is taken back to 0003 (rows with a surrogate id, jsonb inputs and outputs on
PostgreSQL), jobs and rows are written there with the historical models, and the migration is
applied: every row, its input, output, error, status and attempts must read back the same, the
results download must give the same bytes as a job written in the new layout, and the rows still
to do must be what the engine fetches. Unapplying and applying again must lose nothing either.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from jobs import chunk_loop, results
from jobs.models import Job, Row

BEFORE = [("jobs", "0003_faults_chunk_holder")]
STARTED = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
# The current layout: 0004 and every migration after it (0005 adds the jobs' worked time).
V2 = "latest"

pytestmark = pytest.mark.django_db(transaction=True)

# (index, status, data, output, error, attempts); one value holds a quote, a tab, a newline,
# a backslash and non-ASCII text, which both storages must keep exactly.
OLD_ROWS = [
    (0, "succeeded", ["Zoë", 'say "hi"\tnow'], {"text": "line\nbreak \\ ünï", "n": 3}, None, 1),
    (1, "failed", ["x", "=1+1"], None, "bad data (row 2)", 3),
    (2, "pending", ["y", "b2"], None, None, 0),
    (3, "running", ["z", None], None, None, 1),
    (4, "cancelled", ["w", "b4"], None, None, 0),
]


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    if targets == V2:
        targets = executor.loader.graph.leaf_nodes("jobs")
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def _rows(job_pk: int) -> list[tuple]:
    return list(
        Row.objects.filter(job_id=job_pk)
        .order_by("index")
        .values_list("index", "status", "data", "output", "error", "attempts")
    )


def _csv(job: Job) -> list[list[str]]:
    text = b"".join(results.stream(job, "csv")).decode()
    return list(csv.reader(io.StringIO(text)))


@pytest.fixture
def old_job():
    """A job written by the models of migration 0003, in the old table."""
    apps = _migrate(BEFORE)
    OldUser = apps.get_model("auth", "User")
    OldJob = apps.get_model("jobs", "Job")
    OldRow = apps.get_model("jobs", "Row")
    owner = OldUser.objects.create(username="old-layout")
    job = OldJob.objects.create(
        owner=owner,
        processor="template",
        params={"template": "{a}"},
        columns=["a", "b"],
        status="partial",
        total=len(OLD_ROWS),
        started_at=STARTED,
        finished_at=STARTED + timedelta(seconds=100),
    )
    OldRow.objects.bulk_create(
        OldRow(
            job_id=job.pk,
            index=i,
            ref=str(i + 1),
            data=data,
            status=status,
            output=output,
            error=error,
            attempts=attempts,
        )
        for i, status, data, output, error, attempts in OLD_ROWS
    )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT data_type FROM information_schema.columns "
                "WHERE table_name = 'jobs_row' AND column_name IN ('id', 'data') ORDER BY 1"
            )
            assert [t for (t,) in cursor.fetchall()] == ["bigint", "jsonb"]
    try:
        yield job.pk
    finally:
        _migrate(V2)  # whatever the test did, the database ends in the current layout


def test_old_rows_read_back_the_same_after_the_migration(old_job):
    _migrate(V2)

    expected = [(i, st, data, out, err, a) for i, st, data, out, err, a in OLD_ROWS]
    assert _rows(old_job) == expected
    # The key is (job, index) now: no id column is left.
    assert Row.objects.get(job_id=old_job, index=0).pk == (old_job, 0)
    with connection.cursor() as cursor:
        columns = [
            c.name for c in connection.introspection.get_table_description(cursor, "jobs_row")
        ]
    assert "id" not in columns

    # The download of the migrated job, as a user gets it.
    job = Job.objects.get(pk=old_job)
    # Its worked time was not kept: its duration is its span, as before.
    assert job.worked_seconds is None and job.duration == timedelta(seconds=100)
    table = _csv(job)
    assert table[0] == ["a", "b", "text", "_status", "_error"]
    assert table[1] == ["Zoë", 'say "hi"\tnow', "line\nbreak \\ ünï", "succeeded", ""]
    assert table[2] == ["x", "'=1+1", "", "failed", "bad data (row 2)"]
    assert [r[3] for r in table[1:]] == ["succeeded", "failed", "pending", "running", "cancelled"]
    lines = b"".join(results.stream(job, "jsonl")).decode().splitlines()
    first = json.loads(lines[0])
    assert first["input"] == {"a": "Zoë", "b": 'say "hi"\tnow'}
    assert first["output"] == {"text": "line\nbreak \\ ünï", "n": 3}

    # The rows still to do are what a worker fetches, with their inputs decoded.
    todo = chunk_loop.fetch_rows(old_job, 0, len(OLD_ROWS))
    assert todo == [(2, "3", ["y", "b2"], 0, "pending"), (3, "4", ["z", None], 1, "running")]


def test_unapplying_and_applying_again_keeps_every_row(old_job):
    _migrate(V2)
    Row.objects.filter(job_id=old_job, index=2).update(
        status="succeeded", output={"text": "new"}, attempts=1
    )
    apps = _migrate(BEFORE)
    OldRow = apps.get_model("jobs", "Row")
    back = list(
        OldRow.objects.filter(job_id=old_job)
        .order_by("index")
        .values_list("index", "status", "data", "output")
    )
    assert back[2] == (2, "succeeded", ["y", "b2"], {"text": "new"})
    assert back[0] == (0, "succeeded", OLD_ROWS[0][2], OLD_ROWS[0][3])
    assert len({pk for pk in OldRow.objects.values_list("pk", flat=True)}) == len(OLD_ROWS)
    _migrate(V2)
    assert [r[:4] for r in _rows(old_job)][2] == (2, "succeeded", ["y", "b2"], {"text": "new"})
    assert len(_rows(old_job)) == len(OLD_ROWS)
