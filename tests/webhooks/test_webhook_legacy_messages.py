"""Messages queued by the release before delivery rows: a retry goes on where it was, and a first
message whose event the upgrade already sent is not sent twice."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs.models import JobEvent, WebhookDelivery
from jobs.webhook_tasks import deliver_webhook


@pytest.fixture(autouse=True)
def _loopback(settings):
    settings.BATCHHUB_WEBHOOK_ALLOW_PRIVATE = "127.0.0.1/32"


def old_attempt(job, webhook_id: str, number: int, next_retry_in: float) -> JobEvent:
    """An attempt event as the old release wrote it (the same data as today's)."""
    return JobEvent.objects.create(
        job=job,
        type="webhook.attempt",
        message=f"POST {job.webhook_url} → 503 in 80 ms (attempt {number}); retrying",
        actor="system",
        data={
            "webhook_id": webhook_id,
            "event": "job.completed",
            "attempt": number,
            "status_code": 503,
            "duration_ms": 80,
            "error": None,
            "response": "busy",
            "next_retry_in": next_retry_in,
        },
    )


def test_a_retry_message_goes_on_with_its_attempts_and_its_window(receiver, make_job):
    job = make_job(webhook_url=receiver.url)
    old_attempt(job, "msg_old_retry", 1, 5.4)
    old_attempt(job, "msg_old_retry", 2, 33.0)
    first = time.time() - 3600
    kwargs = {"first_attempt_at": first, "waits": 0}

    deliver_webhook.apply(args=(job.pk, "job.completed", "msg_old_retry"), kwargs=kwargs)

    assert [r.headers["webhook-id"] for r in receiver.requests] == ["msg_old_retry"]
    delivery = WebhookDelivery.objects.get(webhook_id="msg_old_retry")
    assert (delivery.status, delivery.attempts) == ("delivered", 3)
    assert abs(delivery.first_attempt_at.timestamp() - first) < 0.001
    done = JobEvent.objects.get(job=job, type="webhook.delivered")
    assert "(attempt 3)" in done.message


def test_a_retry_message_past_its_window_makes_its_last_attempt(receiver, make_job):
    # Restarting the 24 h window at the upgrade would retry a dead receiver for another day.
    receiver.statuses = [503]
    job = make_job(webhook_url=receiver.url)
    old_attempt(job, "msg_old_late", 1, 28800.0)
    kwargs = {"first_attempt_at": time.time() - 25 * 3600, "waits": 0}

    deliver_webhook.apply(args=(job.pk, "job.completed", "msg_old_late"), kwargs=kwargs)

    delivery = WebhookDelivery.objects.get(webhook_id="msg_old_late")
    assert (delivery.status, delivery.attempts) == ("failed", 2)
    failed = JobEvent.objects.get(job=job, type="webhook.failed")
    assert "(attempt 2)" in failed.message and "giving up" in failed.message


def test_a_first_message_whose_event_the_upgrade_sent_is_not_sent_twice(receiver, make_job):
    finished = timezone.now() - timedelta(minutes=10)
    job = make_job(webhook_url=receiver.url, finished_at=finished)
    # Migration 0007 found no event of this job's end and made its delivery, under a new id.
    made = WebhookDelivery.objects.create(
        job=job,
        webhook_id="msg_made_at_upgrade",
        event_type="job.completed",
        attempts=1,
        status="delivered",
    )

    deliver_webhook.apply(args=(job.pk, "job.completed", "msg_first_old"))
    assert receiver.requests == []
    assert list(WebhookDelivery.objects.filter(job=job)) == [made]

    # "Send again" in the old release is a message of its own, with its event: it is sent.
    JobEvent.objects.create(
        job=job,
        type="webhook.redeliver",
        actor="alice",
        data={"webhook_id": "msg_sent_again", "event": "job.completed"},
    )
    deliver_webhook.apply(args=(job.pk, "job.completed", "msg_sent_again"))
    assert [r.headers["webhook-id"] for r in receiver.requests] == ["msg_sent_again"]
