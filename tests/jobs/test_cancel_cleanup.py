"""A cancelled or failed job never keeps rows pending or running, and its counters add up."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs import chunks, finish, reaper, runner, services
from jobs.ingest import loading
from jobs.models import Chunk, Job, JobStatus, Row, RowStatus
from jobs.processors import base
from jobs.processors import calls as processor_calls
from jobs.tasks import cancel_leftovers, ingest_job
from tests.conftest import make_job, rows_text
from tests.jobs.test_engine import during_group, grouped_job

pytestmark = pytest.mark.django_db


def statuses(job: Job) -> dict[str, int]:
    counts: dict[str, int] = {}
    for status in Row.objects.filter(job=job).values_list("status", flat=True):
        counts[status] = counts.get(status, 0) + 1
    return counts


def assert_settled(job: Job) -> None:
    job.refresh_from_db()
    rows = statuses(job)
    assert rows.get(RowStatus.PENDING, 0) == 0 and rows.get(RowStatus.RUNNING, 0) == 0, rows
    assert (job.pending, job.running) == (0, 0)
    assert job.succeeded + job.failed + job.cancelled == job.total
    assert job.counts == {"total": job.total, **finish.recount(job)}


def test_a_loop_failing_mid_chunk_after_a_cancel_leaves_its_rows_cancelled(
    alice, settings, monkeypatch
):
    job = grouped_job(alice, settings, monkeypatch, chunk=1000, group=100)
    real = processor_calls.process
    calls = {"n": 0}

    def process(processor, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            # The cancel arrives while this group runs, then the loop dies with an error of its
            # own (what a processor raises fails its rows instead: test_raising_processors).
            services.cancel(Job.objects.get(pk=job.pk), actor="alice")
            raise RuntimeError("the loop broke")
        return real(processor, batch)

    monkeypatch.setattr(processor_calls, "process", process)
    # Rows through process, not the template's positional shortcut.
    by_rows = base.Processor.process
    monkeypatch.setattr(base.Processor, "process", lambda self, batch: by_rows(self, batch))
    with pytest.raises(RuntimeError):
        runner.work_once(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert_settled(job)
    # The two groups done before the cancel kept their outputs; nothing else ran.
    assert (job.succeeded, job.cancelled) == (200, 800)


def test_the_reaper_cancels_rows_a_dead_loop_left_running_in_a_cancelled_job(
    alice, settings, monkeypatch
):
    job = grouped_job(alice, settings, monkeypatch, chunk=1000, group=100)

    class Died(BaseException):
        """Stands for the worker being killed: nothing of the loop runs after it."""

    def die():
        services.cancel(Job.objects.get(pk=job.pk), actor="alice")
        raise Died

    during_group(monkeypatch, 2, die)
    monkeypatch.setattr(runner, "_cancel_leftovers_after_failure", lambda job_pk: None)
    with pytest.raises(Died):
        runner.work_once(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and job.running == 100  # the group in flight
    assert reaper.reap()["leftovers"] == 0  # a loop may still be finishing its group
    later = timezone.now() + timedelta(seconds=settings.BATCHHUB_LEASE_SECONDS + 1)
    assert reaper.reap(now=later)["leftovers"] == 100
    assert_settled(job)
    assert (job.succeeded, job.cancelled) == (100, 900)
    assert reaper.reap(now=later)["leftovers"] == 0


def test_rows_marked_running_by_an_io_loop_are_cancelled_by_the_reaper(alice, settings):
    job = make_job(alice, rows_text(50), concurrency=1)
    loading.ingest(job.pk)
    # An I/O loop marks its rows running one by one (attempts + 1) and died with them.
    Row.objects.filter(job=job, index__lt=5).update(status=RowStatus.RUNNING, attempts=1)
    Job.objects.filter(pk=job.pk).update(pending=45, running=5)
    services.cancel(Job.objects.get(pk=job.pk), actor="alice")
    job.refresh_from_db()
    assert (job.cancelled, job.running) == (45, 5)
    later = timezone.now() + timedelta(seconds=settings.BATCHHUB_LEASE_SECONDS + 1)
    assert reaper.reap(now=later)["leftovers"] == 5
    assert_settled(job)


def test_cancel_of_a_large_job_changes_rows_in_short_batches(alice, monkeypatch):
    monkeypatch.setattr(finish, "BULK_ROWS", 100)
    job = make_job(alice, rows_text(1000), concurrency=1)
    loading.ingest(job.pk)
    updates = []
    real_update = type(Row.objects.all()).update

    def update(qs, **kwargs):
        n = real_update(qs, **kwargs)
        if qs.model is Row:
            updates.append(n)
        return n

    monkeypatch.setattr(type(Row.objects.all()), "update", update)
    job = services.cancel(Job.objects.get(pk=job.pk), actor="alice")
    assert updates == [100] * 10
    assert_settled(job)
    assert job.cancelled == 1000


def test_cancel_cut_short_leaves_the_rest_to_a_task_and_counters_add_up(alice, monkeypatch):
    monkeypatch.setattr(finish, "BULK_ROWS", 100)
    monkeypatch.setattr(services, "CANCEL_SECONDS", -1.0)  # out of time at once
    sent = []
    monkeypatch.setattr("jobs.tasks.cancel_leftovers.delay", lambda pk: sent.append(pk))
    job = make_job(alice, rows_text(1000), concurrency=1)
    loading.ingest(job.pk)
    job = services.cancel(Job.objects.get(pk=job.pk), actor="alice")
    assert sent == [job.pk]
    assert job.status == JobStatus.CANCELLED and job.pending == 1000
    assert sum(job.counts[k] for k in job.counts if k != "total") == job.total
    cancel_leftovers(job.pk)  # the task
    assert_settled(job)
    assert not Chunk.objects.filter(job=job, done=False).exists()


def test_the_task_of_a_cancel_cut_short_leaves_a_live_loops_group_to_it(
    alice, settings, monkeypatch
):
    # The task cancelled the rows of the group in flight too and counted the rows: the group's
    # results then landed on cancelled rows, and the job said 900 cancelled and -100 running.
    job = grouped_job(alice, settings, monkeypatch, chunk=1000, group=100)
    monkeypatch.setattr(services, "CANCEL_SECONDS", -1.0)  # out of time at once
    monkeypatch.setattr("jobs.tasks.cancel_leftovers.delay", lambda pk: None)

    def cancel_and_run_the_task():
        services.cancel(Job.objects.get(pk=job.pk), actor="alice")
        cancel_leftovers(job.pk)

    during_group(monkeypatch, 2, cancel_and_run_the_task)
    assert runner.work_once(job.pk).action == "stop"
    assert_settled(job)
    # The group in flight finished and kept its outputs; nothing else ran.
    assert (job.succeeded, job.cancelled) == (200, 800)


def test_make_run_start_releases_the_last_runs_leases_and_restarts_loops(alice, monkeypatch):
    from django.core.management import call_command

    job = make_job(alice, rows_text(300), concurrency=1)
    loading.ingest(job.pk)
    chunks.claim_chunk(job.pk)  # held by a worker of the previous run, now gone
    assert Chunk.objects.filter(job=job, lease_until__isnull=False).count() == 1
    cancelled = make_job(alice, rows_text(50), concurrency=1)
    loading.ingest(cancelled.pk)
    Row.objects.filter(job=cancelled, index__lt=5).update(status=RowStatus.RUNNING)
    Job.objects.filter(pk=cancelled.pk).update(pending=45, running=5)
    services.cancel(Job.objects.get(pk=cancelled.pk), actor="alice")
    ingesting = make_job(alice, rows_text(50), concurrency=1)
    Job.objects.filter(pk=ingesting.pk).update(status=JobStatus.VALIDATING)  # cut mid-file
    started, ingests = [], []
    monkeypatch.setattr(chunks, "start_loops", lambda j: started.append(j.pk))
    monkeypatch.setattr(ingest_job, "delay", ingests.append)
    call_command("recover_work")
    assert not Chunk.objects.filter(job=job, lease_until__isnull=False).exists()
    assert started == [job.pk]
    assert ingests == [ingesting.pk]
    assert_settled(cancelled)


def test_a_database_gone_after_a_loop_failed_is_one_plain_warning(monkeypatch, caplog):
    # A PostgreSQL restart logged "leftover rows not cancelled yet" with a traceback for jobs
    # nobody had cancelled.
    from django.db import OperationalError

    def down(**kwargs):
        raise OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(Job.objects, "filter", down)
    finish._cancel_leftovers_after_failure(42)
    (record,) = [r for r in caplog.records if r.name == "jobs.finish"]
    assert record.exc_info is None and "could not look for a cancel" in record.getMessage()
    assert "OperationalError: server closed" in record.getMessage()


def test_a_loop_failing_after_a_cancel_leaves_another_loops_late_rows_to_their_threads(
    alice, settings
):
    # A cancelled loop left its rows in a request to their threads (chunk_loop._Handover): the
    # chunk is done and leased until the requests' deadline. Another loop of the job failing
    # then cancelled those rows too, and their answers, perhaps paid for, were dropped.
    settings.BATCHHUB_CHUNK_ROWS = 10
    job = make_job(alice, rows_text(50), concurrency=1)
    loading.ingest(job.pk)
    Row.objects.filter(job=job, index__lt=5).update(status=RowStatus.RUNNING, attempts=1)
    Job.objects.filter(pk=job.pk).update(pending=45, running=5)
    services.cancel(Job.objects.get(pk=job.pk), actor="alice")
    late = timezone.now() + timedelta(minutes=1)
    Chunk.objects.filter(job=job, start=0).update(done=True, lease_until=late, holder="its own")
    # Rows a cancel cut short left pending, in a chunk nobody holds.
    Row.objects.filter(job=job, index__gte=40).update(status=RowStatus.PENDING)

    runner._cancel_leftovers_after_failure(job.pk)
    statuses = dict(Row.objects.filter(job=job).values_list("index", "status"))
    assert {statuses[i] for i in range(5)} == {RowStatus.RUNNING}
    assert {statuses[i] for i in range(5, 50)} == {RowStatus.CANCELLED}
    job.refresh_from_db()
    assert (job.running, job.pending, job.cancelled) == (5, 0, 45)
