"""Deliveries as rows: a lost message, a duplicate one, a long wait and a slow receiver."""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs import enqueue, reaper, webhook_deliveries
from jobs.models import JobEvent, WebhookDelivery
from jobs.webhook_tasks import deliver_webhook, senders


@pytest.fixture(autouse=True)
def _loopback(settings):
    settings.BATCHHUB_WEBHOOK_ALLOW_PRIVATE = "127.0.0.1/32"


@pytest.fixture
def sent(monkeypatch):
    """Messages the code sends: (delivery pk, countdown or None)."""
    calls = []
    monkeypatch.setattr(deliver_webhook, "delay", lambda pk: calls.append((pk, None)))
    monkeypatch.setattr(
        enqueue, "send_later", lambda name, seconds, pk: calls.append((pk, seconds))
    )
    return calls


def delivery_for(job, **fields) -> WebhookDelivery:
    return WebhookDelivery.objects.create(
        job=job, webhook_id=fields.pop("webhook_id", "msg_d"), event_type="job.completed", **fields
    )


def test_a_message_that_comes_twice_makes_one_attempt(receiver, make_job):
    job = make_job(webhook_url=receiver.url)
    delivery = delivery_for(job)
    deliver_webhook.apply(args=(delivery.pk,))
    deliver_webhook.apply(args=(delivery.pk,))  # a broker's redelivery, or the reaper's
    assert len(receiver.requests) == 1
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.claim) == ("delivered", 1, "")


def test_a_claimed_delivery_is_not_taken_again_until_its_claim_lapses(make_job):
    delivery = delivery_for(make_job())
    now = timezone.now()
    assert webhook_deliveries.claim(delivery.pk, now) is not None
    assert webhook_deliveries.claim(delivery.pk, now + timedelta(seconds=30)) is None
    later = now + timedelta(seconds=webhook_deliveries.SETTLE_SECONDS + 2 + 61)
    assert webhook_deliveries.claim(delivery.pk, later) is not None


def test_a_short_wait_gets_a_countdown_a_long_one_only_its_row(
    receiver, make_job, sent, django_capture_on_commit_callbacks
):
    receiver.statuses = [503]
    job = make_job(webhook_url=receiver.url)
    short = delivery_for(job, webhook_id="msg_short")
    with django_capture_on_commit_callbacks(execute=True):
        webhook_deliveries.run(short.pk)
    short.refresh_from_db()
    ((pk, countdown),) = sent
    assert pk == short.pk and 5 <= countdown <= 6  # the first retry's wait
    assert short.message_due_at == short.next_attempt_at

    sent.clear()
    # The sixth failure waits an hour: past a broker's visibility timeout, so no message waits.
    long = delivery_for(job, webhook_id="msg_long", attempts=5, first_attempt_at=timezone.now())
    with django_capture_on_commit_callbacks(execute=True):
        webhook_deliveries.run(long.pk)
    long.refresh_from_db()
    assert sent == [] and long.message_due_at is None
    wait = (long.next_attempt_at - timezone.now()).total_seconds()
    assert 3500 < wait <= 3600 * 1.2
    assert re.search(r"retrying in \d+ min$", JobEvent.objects.filter(job=job).last().message)


def test_the_reaper_sends_what_is_due_and_has_no_message_on_its_way(
    make_job, sent, django_capture_on_commit_callbacks
):
    job = make_job(webhook_url="https://hooks.example.com/x")
    now = timezone.now()
    lost = delivery_for(job, webhook_id="msg_lost", message_due_at=now - timedelta(seconds=61))
    waited = delivery_for(job, webhook_id="msg_waited", attempts=6, message_due_at=None)
    on_its_way = delivery_for(job, webhook_id="msg_coming", message_due_at=now)
    not_due = delivery_for(job, webhook_id="msg_later", next_attempt_at=now + timedelta(hours=2))
    taken = delivery_for(
        job, webhook_id="msg_taken", claimed_until=now + timedelta(seconds=30), claim="x"
    )
    done = delivery_for(job, webhook_id="msg_done", status="delivered")
    now = timezone.now()  # after the rows were made due

    with django_capture_on_commit_callbacks(execute=True):
        counts = reaper.reap(now)
    assert counts["webhooks"] == 2
    assert sorted(pk for pk, _ in sent) == sorted([lost.pk, waited.pk])

    # The next round sends nothing again before the grace has passed: the messages are on their way.
    sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        assert webhook_deliveries.dispatch_due(now + timedelta(seconds=5)) == 0
    assert sent == []
    for untouched in (on_its_way, not_due, taken, done):
        assert WebhookDelivery.objects.get(pk=untouched.pk).attempts == 0


def test_a_message_from_before_delivery_rows_is_delivered(receiver, make_job):
    job = make_job(webhook_url=receiver.url)
    deliver_webhook.apply(args=(job.pk, "job.completed", "msg_legacy"))
    deliver_webhook.apply(args=(job.pk + 1000, "job.completed", "msg_gone_job"))
    assert [r.headers["webhook-id"] for r in receiver.requests] == ["msg_legacy"]
    assert WebhookDelivery.objects.get(webhook_id="msg_legacy").status == "delivered"


@pytest.mark.django_db(transaction=True)
def test_the_task_returns_while_a_slow_receiver_holds_a_thread(receiver, make_job, settings):
    # Run in the task, two slow receivers held both pool processes and every job on the worker
    # waited for them.
    settings.BATCHHUB_WEBHOOK_THREADS = 2
    release = threading.Event()
    receiver.before_answer = lambda: release.wait(10)
    job = make_job(webhook_url=receiver.url)
    delivery = delivery_for(job)

    started = time.monotonic()
    deliver_webhook.apply(args=(delivery.pk,))
    returned = time.monotonic() - started
    try:
        assert returned < 1.0
        deadline = time.monotonic() + 5
        while not receiver.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        assert len(receiver.requests) == 1
        assert WebhookDelivery.objects.get(pk=delivery.pk).status == "pending"  # still waiting
    finally:
        release.set()
        senders.drain()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 1)


def test_a_retry_message_from_before_delivery_rows_is_delivered(receiver, make_job):
    job = make_job(webhook_url=receiver.url)
    kwargs = {"first_attempt_at": time.time() - 40, "waits": 0}
    deliver_webhook.apply(args=(job.pk, "job.completed", "msg_legacy_retry"), kwargs=kwargs)
    assert [r.headers["webhook-id"] for r in receiver.requests] == ["msg_legacy_retry"]


def test_a_delivery_whose_job_is_deleted_meanwhile_ends_quietly(make_job, monkeypatch):
    job = make_job(webhook_url="https://hooks.example.com/x")
    delivery = delivery_for(job)
    monkeypatch.setattr(webhook_deliveries, "_settle", lambda delivery: job.delete())
    assert webhook_deliveries.run(delivery.pk) is False
    assert not WebhookDelivery.objects.filter(pk=delivery.pk).exists()
