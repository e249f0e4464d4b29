"""A job's ingest and webhook deliveries go to a queue of their own, which every worker takes
from beside the job steps' (settings CELERY_TASK_ROUTES, batchhub/celery.py); a long I/O step
asks how many messages wait (jobs/runner.py)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
from celery import current_app
from django.conf import settings
from kombu import Connection
from kombu.transport import memory
from redis.exceptions import ConnectionError as RedisConnectionError

from batchhub.celery import _consume_express
from jobs import enqueue


@pytest.fixture(autouse=True)
def _broker_answers():
    # A test whose broker could not say leaves the next ones their own first try.
    saved = enqueue._unanswered_until
    enqueue._unanswered_until = 0.0
    yield
    enqueue._unanswered_until = saved


def queue_of(task: str) -> str:
    return current_app.amqp.router.route({}, task)["queue"].name


def test_ingests_and_deliveries_skip_the_job_steps_queue():
    express = settings.BATCHHUB_EXPRESS_QUEUE
    assert express == f"{settings.CELERY_TASK_DEFAULT_QUEUE}.express"
    assert queue_of("jobs.ingest") == express
    assert queue_of("jobs.deliver_webhook") == express
    assert queue_of("jobs.work") == settings.CELERY_TASK_DEFAULT_QUEUE


def test_a_worker_takes_from_the_express_queue_whatever_its_queues(monkeypatch):
    queues = current_app.amqp.queues
    monkeypatch.setattr(queues, "_consume_from", {})
    queues.select(["elsewhere"])
    try:
        _consume_express(sender="w1@host", instance=SimpleNamespace(app=current_app))
        assert set(queues.consume_from) == {"elsewhere", settings.BATCHHUB_EXPRESS_QUEUE}
    finally:
        queues.select([settings.CELERY_TASK_DEFAULT_QUEUE])


def test_waiting_counts_the_messages_of_both_queues():
    before = enqueue.waiting()
    enqueue.send("jobs.ingest", 0)
    enqueue.send("jobs.work", 0)
    assert enqueue.waiting() == before + 2


def test_a_broker_that_cannot_say_counts_as_nothing_waiting_and_is_left_alone(monkeypatch):
    # Asked from a job's loop between its sync points: a failure must neither end the loop nor
    # make it wait for the broker's connect timeout at every turn.
    calls = []

    class Down:
        def acquire(self, **_kwargs):
            calls.append(1)
            raise RuntimeError("a client error that is not an OSError, as redis-py raises")

    monkeypatch.setattr(enqueue, "_unanswered_until", 0.0)
    monkeypatch.setattr(enqueue, "current_app", SimpleNamespace(amqp=current_app.amqp, pool=Down()))
    assert enqueue.waiting() == 0
    assert enqueue.waiting() == 0
    assert len(calls) == 1
    monkeypatch.setattr(enqueue, "_unanswered_until", 0.0)
    assert enqueue.waiting() == 0 and len(calls) == 2


class _AwayPool:
    """A producer pool whose broker refuses connections (Redis restarting, say)."""

    def acquire(self, block=True, timeout=None):
        return Connection("redis://127.0.0.1:1/0")


class _BrokenDeclare:
    def __init__(self):
        self.calls = 0

    def __call__(self, *args, **kwargs):
        # What redis-py raises when a pooled connection finds Redis gone: neither kombu's error
        # nor an OSError.
        self.calls += 1
        raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


def test_waiting_says_nothing_waits_when_the_broker_drops_the_connection(monkeypatch):
    broken = _BrokenDeclare()
    monkeypatch.setattr(memory.Channel, "queue_declare", broken)
    assert enqueue.waiting() == 0
    assert broken.calls >= 1


def test_waiting_does_not_wait_for_a_broker_that_is_away(monkeypatch):
    # Asked from a job loop's own thread: kombu's reconnect (seconds per call) would hold the
    # loop's sync points and the threads' next rows every time it asks.
    monkeypatch.setattr(current_app, "_pool", _AwayPool())
    began = time.monotonic()
    assert enqueue.waiting() == 0
    assert time.monotonic() - began < 1.0
