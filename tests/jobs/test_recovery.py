"""Recovery in-process: a dead worker's rows found by bisection, every death an attempt,
counters valid at every commit, a loop that loses the database giving its chunk back."""

from __future__ import annotations

import math
import os
import subprocess
from datetime import timedelta

import pytest
from django.db import OperationalError
from django.utils import timezone

from jobs import chunk_loop, chunks, enqueue, holders, reaper, runner, steps, syncpoint
from jobs.ingest import loading
from jobs.models import Chunk, Job, JobEvent, JobStatus, Row, RowStatus
from jobs.processors import Processor, base
from tests.conftest import make_job, rows_text

pytestmark = pytest.mark.django_db

GONE = f"{holders.machine()}{holders.SEPARATOR}999999999{holders.SEPARATOR}1{holders.SEPARATOR}1"


class WorkerDied(BaseException):
    """What the loop sees of a SIGKILL: nothing after this point is committed."""


class PoisonProcessor(Processor):
    name = "poison_test"
    inputs = ["name"]
    outputs = ["echo"]
    calls: dict[str, int] = {}

    def process_row(self, row):
        name = row.inputs["name"]
        PoisonProcessor.calls[name] = PoisonProcessor.calls.get(name, 0) + 1
        if name == "poison":
            raise WorkerDied
        return {"echo": name}


@pytest.fixture
def poison_processor(monkeypatch):
    PoisonProcessor.calls = {}
    monkeypatch.setitem(base.registry(), PoisonProcessor.name, PoisonProcessor)


def assert_counters_valid(job: Job) -> None:
    job.refresh_from_db()
    counts = job.counts
    assert all(counts[k] >= 0 for k in counts), counts
    assert sum(v for k, v in counts.items() if k != "total") == job.total, counts


def run_with_deaths(job: Job, max_steps: int = 500) -> int:
    """Drive the job, treating each WorkerDied as a killed process whose chunk is then taken
    over by a loop of the same machine. Counters are checked after every step."""
    deaths = 0
    for _ in range(max_steps):
        job.refresh_from_db()
        if job.status != JobStatus.PROCESSING:
            return deaths
        try:
            runner.work_once(job.pk)
        except WorkerDied:
            deaths += 1
            Chunk.objects.filter(job=job, lease_until__isnull=False).update(holder=GONE)
        assert_counters_valid(job)
    raise AssertionError("job did not finish")


def test_poison_row_is_isolated_by_bisection_and_fails_alone(
    alice, settings, monkeypatch, poison_processor
):
    settings.BATCHHUB_CHUNK_ROWS = 1000
    monkeypatch.setattr(runner, "CPU_GROUP_ROWS", 256)
    monkeypatch.setattr(chunk_loop, "CPU_GROUP_MAX", 256)
    text = rows_text(1000, header="name,text").replace("person537,", "poison,", 1)
    job = make_job(alice, text, processor="poison_test", concurrency=1, max_attempts=3)
    loading.ingest(job.pk)
    deaths = run_with_deaths(job)
    job.refresh_from_db()
    assert job.status == JobStatus.PARTIAL
    assert (job.succeeded, job.failed, job.running, job.pending) == (999, 1, 0, 0)
    poison = Row.objects.get(job=job, index=537)
    assert poison.status == RowStatus.FAILED and "worker died" in poison.error
    # Every death counted, and the row failed the first time it died alone at the limit.
    assert poison.attempts == deaths == PoisonProcessor.calls["poison"]
    assert 3 <= deaths <= 2 + math.ceil(math.log2(256))
    # Good rows re-ran only inside a group that died: at most a group's worth and its halves.
    reruns = sum(PoisonProcessor.calls.values()) - 1000
    assert reruns <= 2 * 256, reruns
    assert set(Row.objects.filter(job=job).exclude(index=537).values_list("status", flat=True)) == {
        RowStatus.SUCCEEDED
    }
    assert JobEvent.objects.filter(job=job, type="recovered", message__contains="failed alone")


def test_a_row_found_alone_below_the_limit_runs_alone_again(alice, settings, poison_processor):
    settings.BATCHHUB_CHUNK_ROWS = 10
    text = rows_text(10, header="name,text").replace("person4,", "poison,", 1)
    job = make_job(alice, text, processor="poison_test", concurrency=1, max_attempts=5)
    loading.ingest(job.pk)
    deaths = run_with_deaths(job)
    poison = Row.objects.get(job=job, index=4)
    assert poison.status == RowStatus.FAILED and poison.attempts == deaths == 5


def test_counters_during_recovery_count_running_rows_only_under_a_live_holder(
    alice, settings, monkeypatch, poison_processor
):
    settings.BATCHHUB_CHUNK_ROWS = 100
    monkeypatch.setattr(runner, "CPU_GROUP_ROWS", 50)
    monkeypatch.setattr(chunk_loop, "CPU_GROUP_MAX", 50)
    text = rows_text(100, header="name,text").replace("person60,", "poison,", 1)
    job = make_job(alice, text, processor="poison_test", concurrency=1)
    loading.ingest(job.pk)
    with pytest.raises(WorkerDied):
        runner.work_once(job.pk)
    job.refresh_from_db()
    # Rows 50..99 were in flight when the worker died: running until someone takes over.
    assert (job.succeeded, job.running, job.pending) == (50, 50, 0)
    Chunk.objects.filter(job=job).update(holder=GONE)
    chunk = chunks.claim_chunk(job.pk)
    job.refresh_from_db()
    assert chunk.suspects == list(range(50, 100))
    assert (job.succeeded, job.running, job.pending) == (50, 0, 50)
    assert set(Row.objects.filter(job=job, index__gte=50).values_list("status", "attempts")) == {
        (RowStatus.PENDING, 1)
    }


def test_a_live_holder_keeps_its_chunk_and_a_gone_one_loses_it_at_once(alice):
    job = make_job(alice, rows_text(10), concurrency=1)
    loading.ingest(job.pk)
    chunk = chunks.claim_chunk(job.pk)
    assert chunk.holder == holders.current() and not holders.is_gone(chunk.holder)
    assert chunks.claim_chunk(job.pk) is None
    # Another machine's holder: only its lease can tell.
    Chunk.objects.filter(pk=chunk.pk).update(holder="elsewhere/1|1|1|1")
    assert chunks.claim_chunk(job.pk) is None
    Chunk.objects.filter(pk=chunk.pk).update(holder=GONE)
    again = chunks.claim_chunk(job.pk)
    assert again is not None and again.pk == chunk.pk and again.claims == 2


def test_a_dead_holders_chunk_is_taken_over_before_fresh_chunks(alice, settings):
    # Left for last, a killed node's rows counted as running for the rest of a long job.
    settings.BATCHHUB_CHUNK_ROWS = 10
    job = make_job(alice, rows_text(50), concurrency=1)
    loading.ingest(job.pk)
    first = chunks.claim_chunk(job.pk)
    Chunk.objects.filter(pk=first.pk).update(holder=GONE)
    assert Chunk.objects.filter(job=job, done=False).count() > 1  # fresh ones wait too
    again = chunks.claim_chunk(job.pk)
    assert again.pk == first.pk and again.claims == 2


def test_holder_of_an_exited_process_is_gone():
    child = subprocess.Popen(["true"])
    child.wait()
    pid = child.pid
    me = holders.current()
    where, _, started, thread = me.rsplit(holders.SEPARATOR, 3)
    assert not holders.is_gone(me)
    assert holders.is_gone(holders.SEPARATOR.join((where, str(pid), started, thread)))
    # Same pid, another start time: the id was reused.
    mine = holders.SEPARATOR.join((where, str(os.getpid()), "1", thread))
    assert holders.is_gone(mine) == (started != "")


@pytest.mark.django_db(transaction=True)  # the loop closes its connection, as after a restart
def test_a_loop_that_loses_the_database_gives_its_chunk_back(
    alice, settings, monkeypatch, poison_processor
):
    monkeypatch.setattr(runner, "RECONNECT_SECONDS", 2.0)
    settings.BATCHHUB_CHUNK_ROWS = 100
    monkeypatch.setattr(runner, "CPU_GROUP_ROWS", 20)
    monkeypatch.setattr(chunk_loop, "CPU_GROUP_MAX", 20)
    job = make_job(
        alice, rows_text(100, header="name,text"), processor="poison_test", concurrency=1
    )
    loading.ingest(job.pk)
    real = syncpoint.write_rows
    calls = {"n": 0}

    def flaky(job_pk, done):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OperationalError("server closed the connection unexpectedly")
        return real(job_pk, done)

    monkeypatch.setattr(syncpoint, "write_rows", flaky)
    job.refresh_from_db()
    concurrency_chunks = Chunk.objects.filter(job=job).count()
    step = runner.work_once(job.pk)
    assert step.action == "continue"
    job.refresh_from_db()
    assert_counters_valid(job)
    assert job.running == 0
    chunk = Chunk.objects.get(job=job, seq=0)
    assert chunk.lease_until is None and chunk.holder == "" and not chunk.done
    assert not JobEvent.objects.filter(job=job, type="recovered").exists()
    for _ in range(4 * concurrency_chunks):
        if Job.objects.get(pk=job.pk).status != JobStatus.PROCESSING:
            break
        runner.work_once(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.COMPLETED and job.succeeded == 100
    # Lost with the connection: rows finished but not committed are done again, nothing twice.
    assert set(Row.objects.filter(job=job).values_list("attempts", flat=True)) <= {1, 2}


def test_reaper_restarts_loops_after_a_short_stall_only_when_nobody_holds_a_chunk(
    alice, settings, monkeypatch, django_capture_on_commit_callbacks
):
    monkeypatch.setattr(enqueue, "queue_length", lambda: 0)
    job = make_job(alice, rows_text(10), concurrency=1)
    loading.ingest(job.pk)
    later = timezone.now() + timedelta(seconds=runner.STALL_SECONDS + 1)
    chunk = chunks.claim_chunk(job.pk)  # a live loop holds it
    assert reaper.reap(now=later)["restarted"] == 0
    Chunk.objects.filter(pk=chunk.pk).update(holder=GONE)
    with django_capture_on_commit_callbacks():
        assert reaper.reap(now=later)["restarted"] == 1
    assert settings.BATCHHUB_LEASE_SECONDS > runner.STALL_SECONDS
    event = JobEvent.objects.get(job=job, type="recovered")
    assert event.message == "No progress for a while: work restarted (a worker stopped)."


@pytest.mark.parametrize(
    ("waiting", "probe", "restarted"),
    [
        # The reaper's own message was queued before its newest step, which may still wait.
        (3, -1.0, 0),
        # Queued after its newest step and run: its steps left the queue, and none started.
        (3, steps.ORDER_SLACK.total_seconds() + 1, 1),
        # Nothing waits: its steps are lost.
        (0, None, 1),
    ],
)
def test_reaper_leaves_a_job_whose_steps_wait_in_the_queue_however_long(
    alice, settings, monkeypatch, django_capture_on_commit_callbacks, waiting, probe, restarted
):
    # A job of a busy worker waits between its steps, no chunk held, while other jobs' steps
    # run, at times for longer than the lease: taking that for lost loops added loops (more
    # requests in flight than its concurrency) and said "a worker stopped".
    monkeypatch.setattr(enqueue, "queue_length", lambda: waiting)
    recorded_sends(monkeypatch)
    job = make_job(alice, rows_text(10), concurrency=1)
    with django_capture_on_commit_callbacks(execute=True):
        loading.ingest(job.pk)
    queued_at = Job.objects.get(pk=job.pk).step_queued_at
    assert queued_at is not None
    later = timezone.now() + timedelta(seconds=10 * settings.BATCHHUB_LEASE_SECONDS)
    kwargs = {} if probe is None else {"probe": queued_at + timedelta(seconds=probe)}
    with django_capture_on_commit_callbacks():
        assert reaper.reap(now=later, **kwargs)["restarted"] == restarted
    assert JobEvent.objects.filter(job=job, type="recovered").count() == restarted


def recorded_sends(monkeypatch) -> list[tuple[str, tuple]]:
    """The broker messages the engine sends from here on, recorded instead of sent."""
    sent: list[tuple[str, tuple]] = []
    monkeypatch.setattr(enqueue, "send", lambda name, *args: sent.append((name, args)) or True)
    return sent


def work_steps(sent: list[tuple[str, tuple]]) -> list[tuple]:
    return [args for name, args in sent if name == "jobs.work"]


def test_steps_queued_before_a_restart_stop_once_the_loops_start_afresh(
    alice, monkeypatch, django_capture_on_commit_callbacks
):
    # `make run` stopped gracefully: each loop queued its next step, and the embedded broker
    # keeps its messages on disk. recover_work then queued the job's loops again, so every
    # restart added a set: after two, a 2-loop job had 6 steps queued and took three times the
    # turns of a job started after it (and, with more pool processes, twice its concurrency).
    from django.core.management import call_command

    from jobs import tasks

    sent = recorded_sends(monkeypatch)
    job = make_job(alice, rows_text(300), concurrency=1)
    with django_capture_on_commit_callbacks(execute=True):
        loading.ingest(job.pk)
    before = work_steps(sent)
    sent.clear()
    call_command("recover_work")
    after = work_steps(sent)
    assert len(before) == len(after) == 1

    monkeypatch.setattr(tasks.work, "apply_async", lambda args, **kw: sent.append(("next", args)))
    sent.clear()
    tasks.work(*before[0])  # the step the last run queued, still in the broker
    assert Job.objects.get(pk=job.pk).succeeded == 0 and sent == []
    tasks.work(*after[0])
    assert Job.objects.get(pk=job.pk).succeeded == 300


def test_the_reapers_loops_replace_the_lost_ones_and_a_late_step_of_those_stops(
    alice, monkeypatch, django_capture_on_commit_callbacks
):
    # The reaper restarts a job only once its steps left the queue without starting: one that
    # comes back after all (Redis gives a dead worker's unacknowledged messages back an hour
    # later) would run beside the new loops, so the restart counts as a new start.
    from jobs import tasks

    monkeypatch.setattr(enqueue, "queue_length", lambda: 0)
    sent = recorded_sends(monkeypatch)
    job = make_job(alice, rows_text(10), concurrency=1)
    with django_capture_on_commit_callbacks(execute=True):
        loading.ingest(job.pk)
    lost = work_steps(sent)
    sent.clear()
    later = timezone.now() + timedelta(seconds=runner.STALL_SECONDS + 1)
    with django_capture_on_commit_callbacks(execute=True):
        assert reaper.reap(now=later)["restarted"] == 1
    new = work_steps(sent)
    assert len(lost) == len(new) == 1  # the plan's loops, no more
    event = JobEvent.objects.get(job=job, type="recovered")
    assert event.message == reaper.STEPS_LOST and "worker stopped" not in event.message
    monkeypatch.setattr(tasks.work, "apply_async", lambda *args, **kwargs: None)
    tasks.work(*lost[0])
    assert Job.objects.get(pk=job.pk).succeeded == 0
    tasks.work(*new[0])
    assert Job.objects.get(pk=job.pk).succeeded == 10
