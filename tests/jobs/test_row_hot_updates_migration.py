"""Migration 0005 (rows rewritten in place) from a database holding jobs in the 0004 layout.

Jobs and rows, some failed (one of them without an error text, which the old layout allowed),
are written at 0004 with the historical models; after the migration every row reads back the
same, the downloads and the failed rows' lookups give the same rows, and on PostgreSQL the row
table has its fill factor. Unapplying restores the old index and the default fill factor.
"""

from __future__ import annotations

import csv
import io

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from jobs import failures, results
from jobs.models import Job, Row

BEFORE = [("jobs", "0004_row_storage_v2")]
AFTER = [("jobs", "0005_row_hot_updates")]
FILLFACTOR = "fillfactor=50"

pytestmark = pytest.mark.django_db(transaction=True)

# (index, status, output, error, attempts)
OLD_ROWS = [
    (0, "succeeded", {"text": "ok é"}, None, 1),
    (1, "failed", None, "bad data (row 2)", 3),
    (2, "failed", None, None, 1),
    (3, "pending", None, "HTTP 503 (will retry)", 1),
    (4, "cancelled", None, None, 0),
]


def _migrate(targets):
    """Migrate to `targets`, or with None to the latest migration of every app."""
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    if targets is None:
        targets = executor.loader.graph.leaf_nodes()
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def _rows(job_pk: int) -> list[tuple]:
    return list(
        Row.objects.filter(job_id=job_pk)
        .order_by("index")
        .values_list("index", "status", "data", "output", "error", "attempts")
    )


def _csv(job: Job, status: str = "all") -> list[list[str]]:
    text = b"".join(results.stream(job, "csv", status)).decode()
    return list(csv.reader(io.StringIO(text)))


def _table_options() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE oid = 'jobs_row'::regclass")
        return list(cursor.fetchone()[0] or [])


def _indexes() -> set[str]:
    with connection.cursor() as cursor:
        return set(connection.introspection.get_constraints(cursor, "jobs_row"))


@pytest.fixture
def old_job():
    """A finished job written by the models of migration 0004."""
    apps = _migrate(BEFORE)
    OldUser = apps.get_model("auth", "User")
    OldJob = apps.get_model("jobs", "Job")
    OldRow = apps.get_model("jobs", "Row")
    owner = OldUser.objects.create(username="old-layout")
    job = OldJob.objects.create(
        owner=owner,
        processor="template",
        params={"template": "{a}"},
        columns=["a"],
        status="partial",
        total=len(OLD_ROWS),
        succeeded=1,
        failed=2,
        pending=1,
        cancelled=1,
    )
    OldRow.objects.bulk_create(
        OldRow(
            job_id=job.pk,
            index=i,
            ref=str(i + 1),
            data=[f"v{i}"],
            status=status,
            output=output,
            error=error,
            attempts=attempts,
        )
        for i, status, output, error, attempts in OLD_ROWS
    )
    assert "row_failed_idx" in _indexes()
    try:
        yield job.pk
    finally:
        _migrate(None)  # whatever the test did, the database ends in the current layout


def test_old_rows_read_back_the_same_after_the_migration(old_job):
    _migrate(AFTER)

    # The failed row stored without an error got an empty one; nothing else changed.
    expected = [(i, st, [f"v{i}"], out, err, a) for i, st, out, err, a in OLD_ROWS]
    expected[2] = (2, "failed", ["v2"], None, "", 1)
    assert _rows(old_job) == expected
    indexes = _indexes()
    assert "row_error_idx" in indexes and "row_failed_idx" not in indexes
    assert "row_failed_has_error" in indexes
    if connection.vendor == "postgresql":
        assert FILLFACTOR in _table_options()

    job = Job.objects.get(pk=old_job)
    table = _csv(job)
    assert table[0] == ["a", "text", "_status", "_error"]
    assert table[1:] == [
        ["v0", "ok é", "succeeded", ""],
        ["v1", "", "failed", "bad data (row 2)"],
        ["v2", "", "failed", ""],
        ["v3", "", "pending", "HTTP 503 (will retry)"],
        ["v4", "", "cancelled", ""],
    ]
    # Both failed rows, and only they, are found by every lookup of failed rows.
    assert _csv(job, "failed")[1:] == [table[2], table[3]]
    assert [r[0] for r in results.iter_rows(job, "failed")] == [1, 2]
    assert [r[0] for r in results.row_page(job, "failed", 0, 10)] == [1, 2]
    reasons, rest = failures.reasons(job)
    assert sorted((r.text, r.rows) for r in reasons) == [
        ("(no message)", 1),
        ("bad data (row 2)", 1),
    ]
    assert rest == 0


def test_unapplying_restores_the_old_index_and_fill_factor(old_job):
    _migrate(AFTER)
    _migrate(BEFORE)

    indexes = _indexes()
    assert "row_failed_idx" in indexes and "row_error_idx" not in indexes
    assert "row_failed_has_error" not in indexes
    if connection.vendor == "postgresql":
        assert not [o for o in _table_options() if o.startswith("fillfactor")]
    assert len(_rows(old_job)) == len(OLD_ROWS)
    _migrate(AFTER)
    errors = [r[4] for r in _rows(old_job)]
    assert errors == [None, "bad data (row 2)", "", "HTTP 503 (will retry)", None]
