"""Deliveries as rows: a lost message, a duplicate one, a long wait and a slow receiver."""

from __future__ import annotations

import re
import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs import enqueue, reaper, webhook_deliveries, webhooks
from jobs.models import Job, JobEvent, WebhookDelivery
from jobs.webhook_tasks import deliver_webhook, senders
from tests.support.dripping import Dripping


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


# --- a receiver that never finishes answering ----------------------------------------------------


@pytest.mark.parametrize(
    ("head", "delivered"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 400\r\n\r\n", True),  # the body drips
        (b"HTTP/1.1 200 OK\r\nX-Slow: ", False),  # the headers drip
    ],
    ids=["body", "headers"],
)
def test_an_answer_that_drips_is_cut_at_the_timeout(make_job, settings, head, delivered):
    # The timeout bounded each read, not the answer: a receiver sending a byte every 2 s held
    # an attempt for good, and its claim's lapse started a second one beside it.
    settings.BATCHHUB_WEBHOOK_TIMEOUT = 1.0
    receiver = Dripping(head)
    try:
        job = make_job(webhook_url=receiver.url)
        delivery = delivery_for(job)
        started = time.monotonic()
        webhook_deliveries.run(delivery.pk)
        took = time.monotonic() - started
    finally:
        receiver.close()
    delivery.refresh_from_db()
    event = JobEvent.objects.filter(job=job).last()
    assert took < 3.0, took
    if delivered:  # the status arrived: the body is only read for its start
        assert delivery.status == "delivered" and event.type == "webhook.delivered"
    else:
        assert delivery.status == "pending" and event.type == "webhook.attempt"
        assert "timed out (1 s)" in event.message and "retrying in" in event.message


# --- an event that no longer describes the job ----------------------------------------------------


def test_sending_again_ends_the_pending_delivery(receiver, make_job, sent):
    receiver.statuses = [503]
    job = make_job(webhook_url=receiver.url)
    first = delivery_for(job, webhook_id="msg_first", attempts=3, first_attempt_at=timezone.now())
    again = webhook_deliveries.redeliver(job, actor="alice")

    first.refresh_from_db()
    assert first.status == "failed" and again != first.webhook_id
    dropped = JobEvent.objects.get(job=job, type="webhook.dropped")
    assert dropped.message == (
        "job.completed (msg_first): no more attempts, the event was sent again as a new message."
    )
    webhook_deliveries.run(first.pk)  # its message, still on its way
    assert receiver.requests == []


def test_a_job_retried_since_drops_its_pending_event(receiver, make_job):
    receiver.statuses = [503]
    job = make_job(status="partial", webhook_url=receiver.url)
    delivery = WebhookDelivery.objects.create(
        job=job, webhook_id="msg_p", event_type="job.partial", attempts=1
    )
    job.status = "processing"  # the failed rows retried
    job.save(update_fields=["status"])
    assert webhook_deliveries.run(delivery.pk) is False
    assert receiver.requests == []
    delivery.refresh_from_db()
    assert delivery.status == "failed"
    assert "the job changed since" in JobEvent.objects.get(job=job, type="webhook.dropped").message


def test_a_cancelled_jobs_event_waits_for_its_pending_rows_to_be_cancelled(make_job):
    # A big job's pending rows are cancelled in batches after the request: its event carried
    # 20,000 to 50,000 "pending" rows.
    job = make_job(rows=2, status="cancelled")
    Job.objects.filter(pk=job.pk).update(running=0, pending=5000)
    settle = webhook_deliveries.settle_delay
    assert settle(job.pk, "job.cancelled", time.time()) == webhook_deliveries.SETTLE_EVERY
    Job.objects.filter(pk=job.pk).update(pending=0)
    assert settle(job.pk, "job.cancelled", time.time()) is None


@pytest.mark.django_db(transaction=True)
def test_a_job_deleted_during_its_attempt_ends_it_quietly(make_job, monkeypatch, caplog):
    job = make_job(webhook_url="https://hooks.example.com/x")
    delivery = delivery_for(job)

    def deleted_meanwhile(job, *args):
        Job.objects.filter(pk=job.pk).delete()
        return webhooks.Attempt(attempt=1, url=job.webhook_url, status_code=200, delivered=True)

    monkeypatch.setattr(webhooks, "deliver_once", deleted_meanwhile)
    assert webhook_deliveries.run(delivery.pk) is True
    assert not WebhookDelivery.objects.exists() and not JobEvent.objects.exists()


# --- where a delivery starts ----------------------------------------------------------------------


def test_a_job_ending_in_a_worker_starts_its_delivery_there(
    make_job, sent, django_capture_on_commit_callbacks
):
    started = []
    job = make_job(webhook_url="https://hooks.example.com/x")
    try:
        webhook_deliveries.start_here(lambda pk: started.append(pk) or True)
        with django_capture_on_commit_callbacks(execute=True):
            webhook_deliveries.on_terminal(job)
        assert len(started) == 1 and sent == []  # no message behind the queue's job steps

        webhook_deliveries.start_here(lambda pk: False)  # a full backlog, or no threads
        with django_capture_on_commit_callbacks(execute=True):
            webhook_deliveries.on_terminal(job)
        assert len(sent) == 1
    finally:
        webhook_deliveries.start_here(None)


def test_an_error_ending_in_a_full_stop_reads_as_one_sentence():
    attempt = webhooks.Attempt(attempt=2, url="https://x.invalid/", duration_ms=0)
    attempt.error = "hooks.x.invalid could not be resolved ([Errno -2] Name or service not known)."
    assert attempt.outcome.endswith("not known) after 0 ms")


def test_a_copy_of_an_old_message_whose_delivery_ended_sends_nothing(receiver, make_job):
    job = make_job(webhook_url=receiver.url)
    for kind, attempt in (("webhook.attempt", 1), ("webhook.delivered", 2)):
        JobEvent.objects.create(
            job=job, type=kind, data={"webhook_id": "msg_old", "attempt": attempt}
        )
    kwargs = {"first_attempt_at": time.time() - 60}
    deliver_webhook.apply(args=(job.pk, "job.completed", "msg_old"), kwargs=kwargs)
    assert receiver.requests == [] and not WebhookDelivery.objects.exists()


def test_sent_again_during_an_attempt_the_old_one_does_not_promise_a_retry(
    receiver, make_job, monkeypatch
):
    receiver.statuses = [503]
    job = make_job(webhook_url=receiver.url)
    old = delivery_for(job, webhook_id="msg_old")
    real = webhooks.deliver_once

    def sent_again_meanwhile(*args):
        attempt = real(*args)
        webhook_deliveries.redeliver(job, actor="alice")
        return attempt

    monkeypatch.setattr(webhooks, "deliver_once", sent_again_meanwhile)
    webhook_deliveries.run(old.pk)
    old.refresh_from_db()
    assert old.status == "failed"
    attempt = JobEvent.objects.get(
        job=job, data__webhook_id="msg_old", type__startswith="webhook.f"
    )
    assert "retrying" not in attempt.message and "giving up" in attempt.message


def test_superseded_while_it_waited_for_running_rows_it_is_not_sent(
    receiver, make_job, monkeypatch
):
    job = make_job(status="cancelled", webhook_url=receiver.url)
    old = WebhookDelivery.objects.create(job=job, webhook_id="msg_wait", event_type="job.cancelled")
    monkeypatch.setattr(
        webhook_deliveries, "_settle", lambda delivery: webhook_deliveries.redeliver(job, "bob")
    )
    assert webhook_deliveries.run(old.pk) is False
    assert receiver.requests == []


@pytest.mark.django_db(transaction=True)
def test_a_stopping_worker_process_lets_the_attempt_under_way_finish(receiver, make_job, settings):
    # What a pool process does on its way out (worker_process_shutdown): without the wait, the
    # attempt was cut and made again once its claim lapsed, a duplicate for the receiver.
    settings.BATCHHUB_WEBHOOK_THREADS = 2
    receiver.before_answer = lambda: time.sleep(1.0)
    delivery = delivery_for(make_job(webhook_url=receiver.url))
    deliver_webhook.apply(args=(delivery.pk,))
    deadline = time.monotonic() + 5
    while not receiver.requests and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(receiver.requests) == 1  # under way

    senders.drain()

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 1)
    assert JobEvent.objects.filter(type="webhook.delivered").count() == 1
