"""SQLite, the embedded default: an ingest writes its rows in short transactions, so a control
or a login never waits for the whole file; a cut ingest resumes with every row once; a failed or
cancelled one leaves no rows behind."""

from __future__ import annotations

import io
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from jobs import chunks, enqueue, holders, reaper, runner, services
from jobs.ingest import db as ingest_db
from jobs.ingest import loading
from jobs.models import Chunk, Job, JobEvent, JobStatus, Row
from tests.conftest import drive, make_job, rows_text
from tests.jobs.test_sqlite_plans import write_transactions

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "sqlite", reason="SQLite's one write lock"),
]


class WorkerKilled(BaseException):
    """Stands for kill -9: not an Exception, so no handler of the ingest sees it."""


def kill_at_batch(n: int):
    """An execute wrapper that kills the ingest in its n-th batch (after n - 1 committed)."""
    seen = {"batches": 0}

    def wrapper(execute, sql, params, many, context):
        if sql.startswith(f'UPDATE "{Job._meta.db_table}" SET "updated_at"'):
            seen["batches"] += 1
            if seen["batches"] == n:
                raise WorkerKilled()
        return execute(sql, params, many, context)

    return wrapper


@pytest.fixture
def small_batches(monkeypatch, settings):
    """Ingest batches and chunks of 200 rows: a file of a few hundred rows crosses as many batch
    and chunk boundaries as one of tens of thousands at the real sizes, which only the timing
    tests here need."""
    monkeypatch.setattr(ingest_db, "SQLITE_BATCH_ROWS", 200)
    monkeypatch.setattr(loading, "SQLITE_BATCH_ROWS", 200)  # its discard step
    settings.BATCHHUB_CHUNK_ROWS = 200


def test_a_100k_row_ingest_never_holds_the_write_lock_for_long(alice):
    job = make_job(alice, rows_text(100_000), concurrency=2)
    with write_transactions(connection) as transactions:
        loading.ingest(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.PROCESSING and job.total == job.pending == 100_000
    assert Row.objects.filter(job=job).count() == 100_000
    # One transaction a batch (and a few for the job's status and chunks), none of them long.
    assert len(transactions) >= 100_000 // ingest_db.SQLITE_BATCH_ROWS
    longest = max(transactions)
    print(f"\n{len(transactions)} write transactions, longest {longest[0] * 1000:.1f} ms CPU")
    assert longest[0] < 0.2, longest


def test_no_row_is_claimable_before_the_whole_file_is_in(alice, monkeypatch, small_batches):
    rows = 2 * ingest_db.SQLITE_BATCH_ROWS + 80
    job = make_job(alice, rows_text(rows), concurrency=2)
    seen = []
    real = ingest_db._sqlite_params

    def watching(rows):
        for n, row in enumerate(real(rows)):
            if n == 2 * ingest_db.SQLITE_BATCH_ROWS:  # two batches committed
                seen.append(
                    (
                        Row.objects.filter(job=job).count(),
                        Chunk.objects.filter(job=job).count(),
                        Job.objects.get(pk=job.pk).status,
                        runner.work_once(job.pk).action,
                    )
                )
            yield row

    monkeypatch.setattr(ingest_db, "_sqlite_params", watching)
    loading.ingest(job.pk)
    assert seen == [(2 * ingest_db.SQLITE_BATCH_ROWS, 0, JobStatus.VALIDATING, "stop")]
    assert drive(job).succeeded == rows


def test_cancel_during_an_ingest_answers_at_once_and_leaves_no_rows(alice, monkeypatch):
    job = make_job(alice, rows_text(30_000), concurrency=2)
    answered = []
    real = ingest_db._sqlite_params

    def cancelling(rows):
        for n, row in enumerate(real(rows)):
            if n == 2 * ingest_db.SQLITE_BATCH_ROWS:
                # Between two batches the ingest holds no transaction: another writer (here the
                # same connection, in a deployment a web process) gets the lock straight away.
                assert not connection.in_atomic_block
                began = time.perf_counter()
                cancelled = services.cancel(Job.objects.get(pk=job.pk), actor="alice")
                answered.append((cancelled.status, time.perf_counter() - began))
            yield row

    monkeypatch.setattr(ingest_db, "_sqlite_params", cancelling)
    loading.ingest(job.pk)
    [(status, took)] = answered
    assert status == JobStatus.CANCELLED and took < 0.2, took
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and job.total == 0
    # The ingest stopped at its next batch and deleted the rows it had committed.
    assert not Row.objects.filter(job=job).exists()
    assert not Chunk.objects.filter(job=job).exists()


def test_a_bad_line_after_committed_batches_fails_the_job_and_leaves_no_rows(alice, settings):
    text = rows_text(20_000) + "only-one-field\n"
    job = make_job(alice, rows_text(10))
    job.input_file.save("late-error.csv", io.BytesIO(text.encode()), save=True)
    loading.ingest(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.error_code == "invalid_csv", job.error_message
    assert "20002" in job.error_message
    assert not Row.objects.filter(job=job).exists()


def test_an_ingest_killed_mid_file_is_resumed_by_the_reaper_with_every_row_once(
    alice, settings, monkeypatch, django_capture_on_commit_callbacks, small_batches
):
    rows = 4 * ingest_db.SQLITE_BATCH_ROWS + 123
    job = make_job(alice, rows_text(rows), concurrency=2)
    with connection.execute_wrapper(kill_at_batch(3)), pytest.raises(WorkerKilled):
        loading.ingest(job.pk)
    job.refresh_from_db()
    committed = 2 * ingest_db.SQLITE_BATCH_ROWS
    assert job.status == JobStatus.VALIDATING and job.total == 0
    before = dict(Row.objects.filter(job=job).values_list("index", "pk"))
    assert sorted(before) == list(range(committed))

    # The reaper takes up an ingest that has not moved for a while: the same path as a lost task.
    enqueued = []
    monkeypatch.setattr(enqueue, "start_ingest", enqueued.append)
    lease = timedelta(seconds=settings.BATCHHUB_LEASE_SECONDS)
    with django_capture_on_commit_callbacks(execute=True):
        assert reaper.reap(now=timezone.now() + 6 * lease)["reingested"] == 1
    assert enqueued == [job.pk]
    loading.ingest(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.PROCESSING and job.total == job.pending == rows
    after = dict(Row.objects.filter(job=job).values_list("index", "pk"))
    assert sorted(after) == list(range(rows))
    # The rows written before the kill were kept, not written again.
    assert {i: after[i] for i in before} == before

    job = drive(job)
    assert job.status == JobStatus.COMPLETED and job.succeeded == rows
    outputs = Row.objects.filter(job=job).order_by("index").values_list("index", "data", "output")
    assert [i for i, _d, _o in outputs] == list(range(rows))
    assert all(o == {"text": f"{d[0]}!"} for _i, d, o in outputs[:: rows // 50])


def test_two_attempts_of_one_ingest_at_once_write_every_row_once(alice, monkeypatch, small_batches):
    # A redelivered ingest task beside the reaper's: the second resumes after the first's rows
    # and finishes; the first stops at its next batch and leaves the rows alone.
    rows = 3 * ingest_db.SQLITE_BATCH_ROWS + 80
    job = make_job(alice, rows_text(rows), concurrency=2)
    real = ingest_db._sqlite_params
    nested = []

    def second_attempt_midway(feed):
        for n, row in enumerate(real(feed)):
            if n == 2 * ingest_db.SQLITE_BATCH_ROWS and not nested:
                nested.append(True)
                loading.ingest(job.pk)
                assert Job.objects.get(pk=job.pk).status == JobStatus.PROCESSING
            yield row

    monkeypatch.setattr(ingest_db, "_sqlite_params", second_attempt_midway)
    loading.ingest(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.PROCESSING and job.total == job.pending == rows
    indexes = list(Row.objects.filter(job=job).order_by("index").values_list("index", flat=True))
    assert indexes == list(range(rows))
    assert Chunk.objects.filter(job=job).count() == len(
        chunks.chunk_bounds(rows, chunks.plan_for(job).chunk_rows, chunks.plan_for(job).loops)
    )
    assert drive(job).succeeded == rows


def test_an_ingest_whose_process_is_gone_is_restarted_within_seconds(
    alice, settings, monkeypatch, django_capture_on_commit_callbacks, small_batches
):
    # On a node killed while reading, the job sat in "validating" for five leases (10 min)
    # with nothing on its timeline saying why.
    rows = 3 * ingest_db.SQLITE_BATCH_ROWS
    job = make_job(alice, rows_text(rows), concurrency=2)
    with connection.execute_wrapper(kill_at_batch(2)), pytest.raises(WorkerKilled):
        loading.ingest(job.pk)
    reading = JobEvent.objects.get(job=job, type="validating")
    assert reading.data[loading.HOLDER] == holders.current()

    enqueued = []
    monkeypatch.setattr(enqueue, "start_ingest", enqueued.append)
    soon = timezone.now() + timedelta(seconds=6)
    with django_capture_on_commit_callbacks(execute=True):
        assert reaper.reap(now=soon)["reingested"] == 0  # its reader still runs: this process
    is_gone = holders.is_gone
    monkeypatch.setattr(holders, "is_gone", lambda holder: holder == holders.current())
    with django_capture_on_commit_callbacks(execute=True):
        assert reaper.reap(now=soon)["reingested"] == 1
    assert enqueued == [job.pk]
    # Its message may wait behind others: the next rounds do not start a second reader.
    later = soon + timedelta(seconds=20)
    with django_capture_on_commit_callbacks(execute=True):
        assert reaper.reap(now=later)["reingested"] == 0

    monkeypatch.setattr(holders, "is_gone", is_gone)
    loading.ingest(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.PROCESSING and job.total == rows
    again = JobEvent.objects.get(job=job, type="ingest_restarted")
    assert again.message == "Reading the input again." and loading.HOLDER in again.data


def test_a_second_ingest_that_fails_after_the_first_finished_leaves_the_job_alone(alice):
    # On PostgreSQL a second attempt's COPY meets the first's rows once it commits: its
    # IntegrityError failed a job already processing, and deleted the rows it was running.
    job = make_job(alice, rows_text(30))
    loading.ingest(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.PROCESSING
    assert (
        loading._fail(job.pk, True, "ingest_error", "The input could not be read.", None) is False
    )
    job.refresh_from_db()
    assert job.status == JobStatus.PROCESSING and Row.objects.filter(job=job).count() == 30
