"""A row left in a request at a cancel is written by its own thread when the answer comes back
(ChunkRun.write_late), as a sync point would have written it, once, and only while it is still
running."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import OperationalError
from django.db.models import F
from django.utils import timezone

from jobs import chunk_loop, finish, services
from jobs.ingest import loading
from jobs.models import Chunk, Job, JobStatus, Row, RowStatus
from jobs.processors import RowResult
from jobs.syncpoint import ChunkRun, _Item, mark_running
from tests.conftest import make_job, rows_text

pytestmark = pytest.mark.django_db


@pytest.fixture
def cancelled_with_rows_in_flight(alice):
    """A cancelled job of 10 rows whose first three were in a request at the cancel."""
    job = make_job(alice, rows_text(10))
    loading.ingest(job.pk)
    items = [_Item(index, "", [], 1) for index in range(3)]
    mark_running(job.pk, items)
    Job.objects.filter(pk=job.pk).update(pending=F("pending") - 3, running=F("running") + 3)
    job = services.cancel(Job.objects.get(pk=job.pk), actor="alice")
    assert (job.running, job.cancelled) == (3, 7)
    chunk = Chunk.objects.filter(job=job).order_by("seq").first()
    return ChunkRun(job=job, chunk=chunk, processor=None, plan=None), items


def test_late_answers_are_written_as_a_sync_point_would_and_counted_once(
    cancelled_with_rows_in_flight,
):
    run, (ok, failed, again) = cancelled_with_rows_in_flight
    assert run.write_late(ok, RowResult.ok({"n": 1}, usage={"tokens": 5}))
    assert run.write_late(failed, RowResult(error="HTTP 404"))
    # One that would wait for another try gets none: the job is cancelled.
    assert run.write_late(again, RowResult(error="HTTP 503", retry=True))
    # A second answer for a row already written changes nothing.
    assert not run.write_late(ok, RowResult.ok({"n": 2}))

    job = Job.objects.get(pk=run.job.pk)
    assert job.status == JobStatus.CANCELLED
    assert (job.running, job.succeeded, job.failed, job.cancelled) == (0, 1, 1, 8)
    assert job.counts == {"total": 10, **finish.recount(job)}
    assert job.usage == {"tokens": 5}
    rows = dict(Row.objects.filter(job=job, index__lt=3).values_list("index", "status"))
    assert rows == {0: RowStatus.SUCCEEDED, 1: RowStatus.FAILED, 2: RowStatus.CANCELLED}
    assert Row.objects.get(job=job, index=0).output == {"n": 1}
    assert Row.objects.get(job=job, index=1).error == "HTTP 404"


def test_a_row_the_reaper_ended_first_is_not_written_or_counted_again(
    cancelled_with_rows_in_flight,
):
    run, (ok, *_rest) = cancelled_with_rows_in_flight
    finish.cancel_leftovers(run.job.pk)  # what the reaper does once the process is gone
    assert not run.write_late(ok, RowResult.ok({"n": 1}))
    job = Job.objects.get(pk=run.job.pk)
    assert (job.running, job.succeeded, job.cancelled) == (0, 0, 10)
    assert Row.objects.get(job=job, index=0).output is None


@pytest.mark.django_db(transaction=True)
def test_a_late_call_that_raised_ends_its_row_failed_saying_why(cancelled_with_rows_in_flight):
    run, (reset, ok, still_mine) = cancelled_with_rows_in_flight
    handover = chunk_loop._Handover()
    assert handover.take(run, [reset, ok]) == {0, 1}
    run.expect_late()
    # A processor whose call lets a connection reset through instead of returning a result.
    raised = ConnectionResetError(104, "Connection reset by peer")
    assert handover.back(reset, None, raised) is chunk_loop._HANDED
    assert handover.back(ok, RowResult.ok({"n": 1})) is chunk_loop._HANDED
    # A call the loop still waits for is the loop's to deal with, as before.
    with pytest.raises(ConnectionResetError):
        handover.back(still_mine, None, raised)

    job = Job.objects.get(pk=run.job.pk)
    assert (job.running, job.succeeded, job.failed, job.cancelled) == (1, 1, 1, 7)
    assert job.counts == {"total": 10, **finish.recount(job)}
    failed = Row.objects.get(job=job, index=0)
    assert failed.status == RowStatus.FAILED
    assert failed.error == "ConnectionResetError: [Errno 104] Connection reset by peer"
    assert failed.reason == "ConnectionResetError: [Errno 104] Connection reset by peer"


@pytest.mark.django_db(transaction=True)
def test_a_late_answer_is_written_once_the_database_is_back(
    cancelled_with_rows_in_flight, monkeypatch
):
    run, (ok, failed, _again) = cancelled_with_rows_in_flight
    handover = chunk_loop._Handover()
    handover.take(run, [ok, failed])
    run.expect_late()
    monkeypatch.setattr(chunk_loop, "LATE_RETRY_SECONDS", 0.01, raising=False)
    real = ChunkRun.write_late
    away = {"writes": 3}

    def write_late(self, item, result):
        if away["writes"]:  # the database is away for the first few tries
            away["writes"] -= 1
            raise OperationalError("server closed the connection unexpectedly")
        return real(self, item, result)

    monkeypatch.setattr(ChunkRun, "write_late", write_late)
    assert handover.back(ok, RowResult.ok({"n": 1})) is chunk_loop._HANDED
    assert handover.back(failed, RowResult(error="HTTP 404")) is chunk_loop._HANDED
    job = Job.objects.get(pk=run.job.pk)
    assert (job.running, job.succeeded, job.failed, job.cancelled) == (1, 1, 1, 7)
    assert Row.objects.get(job=job, index=0).output == {"n": 1}
    assert Row.objects.get(job=job, index=1).error == "HTTP 404"
    assert job.counts == {"total": 10, **finish.recount(job)}


@pytest.mark.django_db(transaction=True)
def test_a_late_answer_is_left_to_the_reaper_once_its_deadline_passed(
    cancelled_with_rows_in_flight, monkeypatch
):
    run, (ok, *_rest) = cancelled_with_rows_in_flight
    handover = chunk_loop._Handover()
    handover.take(run, [ok])
    run.late_until = timezone.now() - timedelta(seconds=1)  # the reaper's cleanup may end it
    tries = []

    def write_late(self, item, result):
        tries.append(item.index)
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(ChunkRun, "write_late", write_late)
    assert handover.back(ok, RowResult.ok({"n": 1})) is chunk_loop._HANDED
    assert tries == [0]  # not tried again: the thread ends
    assert Job.objects.get(pk=run.job.pk).running == 3
