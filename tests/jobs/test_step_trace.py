"""The trace of a job's loop steps (jobs/steps.py): when they are queued and start, and how the
reaper tells steps that wait their turn from lost ones by the order of the queue."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from celery import current_app
from celery.app.task import Context
from django.conf import settings
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from kombu import Connection

from batchhub import celery as celery_setup
from batchhub import dbclock
from batchhub.celery import SENT_HEADER
from jobs import chunks, enqueue, reaper, runner, steps, tasks
from jobs.ingest import loading
from jobs.models import Chunk, Job, JobEvent
from jobs.syncpoint import ChunkRun
from tests.conftest import make_job, rows_text
from tests.jobs.test_recovery import GONE, recorded_sends, work_steps

pytestmark = pytest.mark.django_db

QUEUE_LENGTH = enqueue.queue_length  # the broker's own answer, before a test replaces it

STALLED = timedelta(seconds=runner.STALL_SECONDS + 1)


@pytest.fixture
def queued_job(alice, monkeypatch, django_capture_on_commit_callbacks):
    """A 10-row job read, its one loop's first step queued (recorded, not sent)."""
    monkeypatch.setattr(enqueue, "queue_length", lambda: 0)
    sent = recorded_sends(monkeypatch)
    job = make_job(alice, rows_text(10), concurrency=1)
    with django_capture_on_commit_callbacks(execute=True):
        loading.ingest(job.pk)
    job.refresh_from_db()
    job.sent = sent
    return job


def reap(now, **kwargs) -> int:
    return reaper.reap(now=now, **kwargs)["restarted"]


def test_a_step_records_its_start_and_its_next_steps_queueing(queued_job, monkeypatch):
    queued = []
    monkeypatch.setattr(tasks.work, "apply_async", lambda args, **kw: queued.append(kw))
    before = dbclock.now()
    assert runner.work_once(queued_job.pk, generation=queued_job.loop_generation - 1).action == (
        "stop"
    )
    # Stamped as the step reads the job, even by a step that then stops.
    assert before <= Job.objects.get(pk=queued_job.pk).step_started_at <= dbclock.now()
    monkeypatch.setattr(runner, "work_once", lambda *a, **kw: runner.Step("wait", 30.0))
    tasks.work(queued_job.pk, queued_job.loop_generation)
    job = Job.objects.get(pk=queued_job.pk)
    # A delayed step counts from when it is due (it cannot start before), and then from when
    # a pool process is free for it.
    assert queued[0]["countdown"] == 30.0
    assert job.step_queued_at >= before + timedelta(seconds=30 + runner.IO_TASK_SECONDS)
    # A plain step queued meanwhile leaves the later due time standing.
    steps.queued(job.pk)
    assert Job.objects.get(pk=job.pk).step_queued_at == job.step_queued_at


def two_chunk_job(alice, monkeypatch, django_capture_on_commit_callbacks) -> Job:
    """A 10-row job read, in two chunks, whose steps run one chunk each."""
    recorded_sends(monkeypatch)
    monkeypatch.setattr(settings, "BATCHHUB_CHUNK_ROWS", 5)
    monkeypatch.setattr(runner, "TASK_SECONDS", 0.0)
    job = make_job(alice, rows_text(10), concurrency=1)
    with django_capture_on_commit_callbacks(execute=True):
        loading.ingest(job.pk)
    job.refresh_from_db()
    return job


def test_a_step_reads_and_writes_its_job_row_no_more_than_its_sync_points_do(
    alice, monkeypatch, django_capture_on_commit_callbacks
):
    # The trace cost a step two writes of the job row (its start, its next step's queueing) and
    # a read of its start count at each claim, beside the step's own read of the job.
    job = two_chunk_job(alice, monkeypatch, django_capture_on_commit_callbacks)
    queued = []
    monkeypatch.setattr(tasks.work, "apply_async", lambda args, **kw: queued.append(args))
    syncs = []
    real_sync = ChunkRun._sync
    monkeypatch.setattr(
        ChunkRun, "_sync", lambda run, *a, **kw: syncs.append(1) or real_sync(run, *a, **kw)
    )
    before = dbclock.now()
    with CaptureQueriesContext(connection) as captured:
        tasks.work(job.pk, job.loop_generation)
    assert queued == [(job.pk, job.loop_generation)]
    done = Job.objects.get(pk=job.pk)
    assert done.succeeded == 5
    table = f'"{Job._meta.db_table}"'
    job_row = [
        q["sql"]
        for q in captured.captured_queries
        if q["sql"].startswith(f"UPDATE {table}")
        or (q["sql"].startswith("SELECT") and f"FROM {table}" in q["sql"].split(" WHERE ")[0])
    ]
    # Each sync point reads the job under its lock and writes it; the step's start is the
    # one statement more, and it counts the next step as queued once queued just after.
    assert len(job_row) == 1 + 2 * len(syncs), job_row
    assert before <= done.step_started_at
    assert done.step_queued_at >= dbclock.now()


def test_a_step_that_queues_its_next_one_late_records_when(
    alice, monkeypatch, django_capture_on_commit_callbacks
):
    # The broker was slow to take the message (retries through a restart): past what the last
    # sync point counted, the step writes the time itself.
    job = two_chunk_job(alice, monkeypatch, django_capture_on_commit_callbacks)
    late = steps.QUEUED_WITHIN + 1.0
    monkeypatch.setattr(tasks.work, "apply_async", lambda *a, **kw: time.sleep(late))
    began = dbclock.now()
    tasks.work(job.pk, job.loop_generation)
    done = Job.objects.get(pk=job.pk)
    assert done.succeeded == 5
    assert done.step_queued_at >= began + timedelta(seconds=late)


def test_a_step_that_has_just_started_keeps_its_job_from_a_restart(queued_job):
    # A step taken from the queue has not claimed its chunk yet: nothing held, nothing new
    # committed, and nothing waits.
    later = timezone.now() + STALLED
    Job.objects.filter(pk=queued_job.pk).update(step_started_at=later - timedelta(seconds=1))
    assert reap(later) == 0
    assert reap(later + STALLED) == 1


def test_a_delayed_step_not_yet_due_is_not_lost(queued_job):
    # It waits in a worker for its time, not in the queue: "nothing waits" says nothing of it.
    steps.queued(queued_job.pk, delay=60.0)
    assert reap(timezone.now() + STALLED) == 0
    assert reap(timezone.now() + timedelta(seconds=60) + STALLED) == 1


def test_a_dead_holders_chunk_is_left_to_the_jobs_queued_step(queued_job, monkeypatch):
    # The job's next step waits behind other jobs' and will take the chunk over itself: new
    # loops would run beside it. Once its steps are gone, the restart says a worker stopped.
    monkeypatch.setattr(enqueue, "queue_length", lambda: 5)
    chunk = Chunk.objects.filter(job=queued_job).first()
    Chunk.objects.filter(pk=chunk.pk).update(
        holder=GONE, lease_until=timezone.now() + timedelta(hours=1)
    )
    later = timezone.now() + timedelta(seconds=10 * settings.BATCHHUB_LEASE_SECONDS)
    queued_at = Job.objects.get(pk=queued_job.pk).step_queued_at
    assert reap(later, probe=queued_at) == 0
    assert not JobEvent.objects.filter(job=queued_job, type="recovered").exists()
    assert reap(later, probe=queued_at + steps.ORDER_SLACK * 2) == 1
    event = JobEvent.objects.get(job=queued_job, type="recovered")
    assert event.message == reaper.WORKER_STOPPED


def test_a_step_that_starts_as_the_reaper_decides_stops_or_keeps_the_job(queued_job):
    # The restart and a step's start are one statement each on the job's row: whichever comes
    # first, the job ends with one set of loops.
    later = timezone.now() + STALLED
    left = later - steps.ORDER_SLACK
    generation = steps.take_for_lost(queued_job.pk, now=later, stall=STALLED, left_before=left)
    assert generation == queued_job.loop_generation + 1
    # The step that was judged lost starts after all: it belongs to an earlier start and stops.
    old = queued_job.loop_generation
    assert runner.work_once(queued_job.pk, generation=old).action == "stop"
    assert Job.objects.get(pk=queued_job.pk).succeeded == 0
    # A step started first: the reaper leaves the job alone.
    again = later + STALLED
    Job.objects.filter(pk=queued_job.pk).update(step_started_at=again, updated_at=later)
    assert steps.take_for_lost(queued_job.pk, now=again, stall=STALLED, left_before=again) is None


def test_the_reapers_message_carries_when_it_was_sent_and_the_reaper_reads_it(monkeypatch):
    before = dbclock.now()
    result = tasks.reap.apply_async()
    with Connection(settings.CELERY_BROKER_URL) as conn:
        queue = conn.SimpleQueue(settings.CELERY_TASK_DEFAULT_QUEUE)
        while True:  # other tests' messages may wait before it
            message = queue.get(timeout=1)
            message.ack()
            if message.headers.get("id") == result.id:
                break
    headers = dict(message.headers)
    assert isinstance(headers[SENT_HEADER], float)
    sent = steps.sent_at(Context(headers))
    assert before <= sent <= dbclock.now()
    seen = {}
    monkeypatch.setattr(reaper, "reap", lambda **kw: seen.update(kw))
    tasks.reap.push_request(**headers)
    try:
        tasks.reap.run()
    finally:
        tasks.reap.pop_request()
    assert seen == {"probe": sent}
    assert steps.sent_at(Context({})) is None


def test_the_reapers_message_and_the_steps_share_one_queue():
    # Its message can only tell which steps left the queue if it waited in the same one.
    def queue_of(task: str) -> str:
        return current_app.amqp.router.route({}, task)["queue"].name

    assert queue_of("jobs.reap") == queue_of("jobs.work") == settings.CELERY_TASK_DEFAULT_QUEUE


def test_a_restart_is_recorded_as_queued(queued_job, django_capture_on_commit_callbacks):
    # The new loops' steps wait their turn like any: the next rounds leave them alone.
    later = timezone.now() + STALLED
    with django_capture_on_commit_callbacks(execute=True):
        assert reap(later) == 1
    steps_sent = work_steps(queued_job.sent)
    assert len(steps_sent) == 2  # the first start's and the restart's
    job = Job.objects.get(pk=queued_job.pk)
    assert job.step_queued_at >= later
    assert job.loop_generation == queued_job.loop_generation + 1
    assert reap(later + timedelta(seconds=1)) == 0


def test_a_broker_that_cannot_say_what_waits_is_not_taken_for_an_empty_queue(
    queued_job, monkeypatch
):
    # A Redis blip: the count failed and read as 0 for the next half minute, and every job whose
    # step was still queued looked lost and restarted.
    monkeypatch.setattr(enqueue, "queue_length", QUEUE_LENGTH)
    monkeypatch.setattr(enqueue, "_unanswered_until", 0.0)

    def unreachable(*args, **kwargs):
        raise ConnectionError("Error 111 connecting to localhost:6379. Connection refused.")

    monkeypatch.setattr(current_app.pool, "acquire", unreachable)
    assert reap(timezone.now() + STALLED) == 0
    assert not JobEvent.objects.filter(job=queued_job, type="recovered").exists()
    # A loop's turn-over still reads it as nothing waiting: it keeps its pool process.
    assert enqueue.waiting() == 0


@pytest.mark.parametrize("length", [3, None])
def test_without_the_reapers_time_a_lost_job_restarts_after_a_lease(
    queued_job, monkeypatch, length
):
    # An older beat (a rolling upgrade) sends the reaper's message without its time: with a busy
    # queue, or a broker that cannot say, a lost job was never restarted, even one whose worker
    # machine died. Without it, the rule before steps were traced: a lease without a start.
    monkeypatch.setattr(enqueue, "queue_length", lambda: length)
    lease = timedelta(seconds=settings.BATCHHUB_LEASE_SECONDS)
    assert reap(timezone.now() + STALLED) == 0
    assert reap(timezone.now() + lease + STALLED) == 1


def test_the_reapers_time_and_the_steps_are_on_one_clock(queued_job, monkeypatch):
    # Beat's clock ahead of the workers': a step queued after the reaper's message looked queued
    # before it, and its job was restarted as lost while the step waited its turn. Every one of
    # those times is the database's.
    real_time, real_now = time.time, timezone.now
    monkeypatch.setattr(time, "time", lambda: real_time() + 60)
    headers = {}
    celery_setup._stamp_sent_time(sender="jobs.reap", headers=headers)
    monkeypatch.setattr(time, "time", real_time)
    # The worker that queues the job's next step runs behind.
    monkeypatch.setattr(timezone, "now", lambda: real_now() - timedelta(seconds=60))
    steps.queued(queued_job.pk)
    monkeypatch.setattr(timezone, "now", real_now)
    monkeypatch.setattr(enqueue, "queue_length", lambda: 5)
    assert reap(timezone.now() + STALLED, probe=steps.sent_at(Context(headers))) == 0
    assert not JobEvent.objects.filter(job=queued_job, type="recovered").exists()


def test_a_delayed_step_due_but_waiting_for_a_pool_process_is_not_lost(queued_job, monkeypatch):
    # Once due, it waits in the worker that holds it for a free pool process, out of the queue:
    # a reaper's message passing it found it gone, and the job restarted as lost.
    monkeypatch.setattr(tasks.work, "apply_async", lambda *args, **kwargs: None)
    monkeypatch.setattr(runner, "work_once", lambda *a, **kw: runner.Step("wait", 30.0))
    tasks.work(queued_job.pk, queued_job.loop_generation)
    monkeypatch.setattr(enqueue, "queue_length", lambda: 5)
    due = dbclock.now() + timedelta(seconds=30)
    assert reap(due + STALLED, probe=due + 2 * steps.ORDER_SLACK) == 0
    # Not started once a busy pool process would have been free: lost.
    free = due + timedelta(seconds=runner.IO_TASK_SECONDS) + 2 * steps.ORDER_SLACK
    assert reap(free + STALLED, probe=free) == 1


def test_a_start_landing_before_the_reapers_loops_are_queued_gets_one_plan(
    queued_job, django_capture_on_commit_callbacks
):
    # A resume or retry between the reaper's restart and the queueing of its loops: the reaper
    # read the job's start count again and queued a second plan under the resume's count.
    later = timezone.now() + STALLED
    with django_capture_on_commit_callbacks() as callbacks:
        assert reap(later) == 1
    queued_job.sent.clear()
    chunks.start_loops(Job.objects.get(pk=queued_job.pk))
    for callback in callbacks:
        callback()
    current = Job.objects.get(pk=queued_job.pk).loop_generation
    generations = [args[1] for args in work_steps(queued_job.sent)]
    assert generations.count(current) == chunks.plan_for(queued_job).loops
    assert generations.count(queued_job.loop_generation + 1) == 1  # the reaper's: they stop


def test_a_step_whose_loops_restart_before_its_claim_stops_without_the_chunk(
    queued_job, monkeypatch
):
    # The step checked its start at the top, then waited for the database (SQLite's busy
    # waits) longer than the stall: the reaper restarted the loops meanwhile, and the step ran
    # a chunk beside the new ones.
    old = queued_job.loop_generation
    real = runner.get_processor_class

    def restarted_meanwhile(name):
        Job.objects.filter(pk=queued_job.pk).update(loop_generation=F("loop_generation") + 1)
        return real(name)

    monkeypatch.setattr(runner, "get_processor_class", restarted_meanwhile)
    assert runner.work_once(queued_job.pk, generation=old).action == "stop"
    assert Job.objects.get(pk=queued_job.pk).succeeded == 0
    # Given back as it was: no attempt counted, free for the new loops.
    chunk = Chunk.objects.filter(job=queued_job).order_by("seq").first()
    assert chunk.claims == 0 and not chunk.holder and chunk.lease_until is None
