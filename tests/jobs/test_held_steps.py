"""Steps a live worker holds past the queue (jobs/held.py): a delayed step due while the worker's
pool was busy with long steps looked lost to the reaper, whose own message passed it in the
queue, and its job was restarted as lost (its timeline saying so, its loops queued again)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from celery import current_app
from celery.worker import state as worker_state

from batchhub import dbclock
from jobs import enqueue, held, reaper, runner, steps, tasks
from jobs.models import Job, JobEvent
from tests.jobs.test_step_trace import STALLED, queued_job  # noqa: F401

pytestmark = pytest.mark.django_db

REAL_HELD = held.held  # before the tests' stand-in (tests/conftest.py)


@pytest.fixture
def overdue(queued_job, monkeypatch):  # noqa: F811
    """The job's delayed step is due, and past the time a busy pool process is counted free:
    the reaper's message passed it in the queue, no step started, nothing held."""
    monkeypatch.setattr(tasks.work, "apply_async", lambda *args, **kwargs: None)
    monkeypatch.setattr(runner, "work_once", lambda *a, **kw: runner.Step("wait", 30.0))
    tasks.work(queued_job.pk, queued_job.loop_generation)
    monkeypatch.setattr(enqueue, "queue_length", lambda: 5)
    free = dbclock.now() + timedelta(seconds=30 + runner.IO_TASK_SECONDS) + 2 * steps.ORDER_SLACK
    return queued_job, free


def answer(monkeypatch, steps_held):
    asked = []
    monkeypatch.setattr(held, "held", lambda: asked.append(1) or steps_held)
    return asked


def restarts(job, free) -> int:
    return reaper.reap(now=free + STALLED, probe=free)["restarted"]


def test_a_job_whose_step_a_live_worker_holds_is_not_restarted(overdue, monkeypatch):
    job, free = overdue
    answer(monkeypatch, {(job.pk, job.loop_generation), (job.pk + 1, 0)})
    assert restarts(job, free) == 0
    assert not JobEvent.objects.filter(job=job, type="recovered").exists()
    assert Job.objects.get(pk=job.pk).loop_generation == job.loop_generation
    # Its worker gone (it no longer answers for it): lost, at the next round.
    answer(monkeypatch, set())
    assert restarts(job, free) == 1
    assert JobEvent.objects.get(job=job, type="recovered").message == reaper.STEPS_LOST


@pytest.mark.parametrize(
    "steps_held", [lambda job: None, lambda job: {(job.pk, job.loop_generation - 1)}]
)
def test_workers_that_cannot_say_or_hold_an_earlier_starts_step_leave_the_rule(
    overdue, monkeypatch, steps_held
):
    # The broker away, or a step that stops when it runs: the job is restarted as before.
    job, free = overdue
    answer(monkeypatch, steps_held(job))
    assert restarts(job, free) == 1


def test_a_step_queued_without_a_start_count_counts_for_any_start(overdue, monkeypatch):
    job, free = overdue
    answer(monkeypatch, {(job.pk, None)})
    assert restarts(job, free) == 0


def test_the_workers_are_asked_only_in_a_round_where_a_job_looks_lost(overdue, monkeypatch):
    job, free = overdue
    asked = answer(monkeypatch, set())
    assert reaper.reap(now=free - timedelta(seconds=20), probe=free)["restarted"] == 0
    assert asked == []  # waiting its time: no question, no second's wait
    assert restarts(job, free) == 1
    assert asked == [1]


class _Request:
    def __init__(self, name: str, *args):
        self.name, self.args = name, args


def test_a_worker_answers_with_the_steps_it_holds_and_has_not_started(monkeypatch):
    due, later, running = (
        _Request("jobs.work", 1, 4),
        _Request("jobs.work", 2),
        _Request("jobs.work", 3, 1),
    )
    other = _Request("jobs.ingest", 9)
    for request in (due, running, other):
        worker_state.reserved_requests.add(request)
    worker_state.scheduled_requests.add(later)
    worker_state.active_requests.add(running)
    try:
        answer_ = held.batchhub_held_steps(None)
    finally:
        for request in (due, running, other):
            worker_state.reserved_requests.discard(request)
        worker_state.scheduled_requests.discard(later)
        worker_state.active_requests.discard(running)
    assert sorted(answer_, key=lambda item: item[0]) == [[1, 4], [2, None]]


def test_the_answers_of_every_worker_are_put_together(monkeypatch):
    replies = [{"w1@a": [[1, 4], [2, None]]}, {"w2@b": {"error": "No such command"}}]
    monkeypatch.setattr(current_app.control, "broadcast", lambda *a, **kw: replies)
    assert REAL_HELD() == {(1, 4), (2, None)}

    def unreachable(*args, **kwargs):
        raise ConnectionError("Error 111 connecting to localhost:6379. Connection refused.")

    monkeypatch.setattr(current_app.control, "broadcast", unreachable)
    assert REAL_HELD() is None
