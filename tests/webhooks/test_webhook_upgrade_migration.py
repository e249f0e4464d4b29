"""Migration 0007 from a database the release before delivery rows left with work in flight.

The database is taken back to 0006 (the table exists, empty as the upgrade finds it, but for a
row a 0006 release made), jobs and their webhook events are written with the historical models as
the old release wrote them, and 0007 is applied: each delivery that was pending becomes a row, with
its attempts and the start of its 24 h window; nothing else does. An old retry message that
arrives afterwards goes on from that row.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from jobs.models import Job, JobEvent, WebhookDelivery
from jobs.webhook_tasks import deliver_webhook

BEFORE = [("jobs", "0006_webhook_deliveries")]
AFTER = [("jobs", "0007_pending_webhook_deliveries")]
NOW = timezone.now()
T0 = NOW - timedelta(hours=1)

pytestmark = pytest.mark.django_db(transaction=True)


def _migrate(targets):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    if targets == "latest":
        targets = executor.loader.graph.leaf_nodes("jobs")
    executor.migrate(targets)
    return executor.loader.project_state(targets).apps


def _attempt(kind, webhook_id, number, next_retry_in=None, event="job.completed"):
    return (
        kind,
        {
            "webhook_id": webhook_id,
            "event": event,
            "attempt": number,
            "status_code": 200 if kind == "webhook.delivered" else 503,
            "duration_ms": 150,
            "error": None,
            "response": None,
            "next_retry_in": next_retry_in,
        },
    )


def _redeliver(webhook_id, event="job.completed"):
    return ("webhook.redeliver", {"webhook_id": webhook_id, "event": event})


@pytest.fixture
def old_state(settings):
    """Jobs and events as the old release left them; {name: job pk}."""
    settings.BATCHHUB_WEBHOOK_ALLOW_PRIVATE = "127.0.0.1/32"
    apps = _migrate(BEFORE)
    User = apps.get_model("auth", "User")
    Job = apps.get_model("jobs", "Job")
    Event = apps.get_model("jobs", "JobEvent")
    Delivery = apps.get_model("jobs", "WebhookDelivery")
    owner = User.objects.create(username="old-release")

    def job(name, status="completed", url="https://hooks.example.com/in", ended=NOW):
        return Job.objects.create(
            owner=owner,
            name=name,
            processor="template",
            status=status,
            webhook_url=url,
            finished_at=ended
            if status in ("completed", "partial", "failed", "cancelled")
            else None,
        ).pk

    jobs = {
        "retrying": job("retrying", ended=T0),
        "redelivered": job("redelivered", ended=T0),
        "lost_first": job("lost_first", status="partial", ended=NOW - timedelta(hours=3)),
        "old_lost_first": job("old_lost_first", ended=NOW - timedelta(hours=30)),
        "no_url": job("no_url", status="cancelled", url=""),
        "null_url": job("null_url", url=None),
        "running": job("running", status="processing"),
        "gave_up": job("gave_up", status="failed", ended=T0),
        "had_row": job("had_row", ended=T0),
        "dropped": job("dropped", ended=T0),
    }
    # Interleaved between jobs and ids, as a busy database wrote them.
    timeline = [
        ("retrying", _attempt("webhook.attempt", "msg_retry", 1, 5.4)),
        ("redelivered", _attempt("webhook.attempt", "msg_first", 1, 5.0)),
        ("gave_up", _attempt("webhook.attempt", "msg_410", 1, 5.0, event="job.failed")),
        ("retrying", _attempt("webhook.attempt", "msg_retry", 2, 33.0)),
        ("redelivered", _attempt("webhook.delivered", "msg_first", 2)),
        ("gave_up", _attempt("webhook.failed", "msg_410", 2, event="job.failed")),
        ("redelivered", _redeliver("msg_again")),
        ("had_row", _attempt("webhook.attempt", "msg_had_row", 1, 5.0)),
        ("dropped", _attempt("webhook.attempt", "msg_dropped", 1, 5.0)),
        ("dropped", ("webhook.dropped", {"webhook_id": "msg_dropped", "event": "job.completed"})),
    ]
    for i, (name, (kind, data)) in enumerate(timeline):
        Event.objects.create(
            job_id=jobs[name],
            at=T0 + timedelta(seconds=6 * i),
            type=kind,
            actor="system",
            data=data,
        )
    # A 0006 release had made this one's row already: it is left as it is.
    Delivery.objects.create(
        job_id=jobs["had_row"], webhook_id="msg_had_row", event_type="job.completed", attempts=7
    )
    try:
        yield jobs
    finally:
        _migrate("latest")


def _pending():
    return {
        d.job.name: d
        for d in WebhookDelivery.objects.select_related("job").filter(status="pending")
    }


def test_the_deliveries_pending_at_the_upgrade_become_rows(old_state):
    _migrate(AFTER)
    _migrate("latest")  # the code below reads through today's models
    pending = _pending()
    assert sorted(pending) == ["had_row", "lost_first", "redelivered", "retrying"]

    retry = pending["retrying"]
    assert (retry.webhook_id, retry.event_type, retry.attempts) == (
        "msg_retry",
        "job.completed",
        2,
    )
    # The window started with the first attempt's POST; the next is due after the last wait.
    assert retry.first_attempt_at == T0 - timedelta(milliseconds=150)
    assert retry.next_attempt_at == T0 + timedelta(seconds=18 + 33.0)
    assert retry.message_due_at is None and retry.claimed_until is None

    again = pending["redelivered"]
    assert (again.webhook_id, again.attempts, again.first_attempt_at) == ("msg_again", 0, None)
    assert again.next_attempt_at >= NOW and again.message_due_at is None

    lost = pending["lost_first"]
    assert lost.webhook_id.startswith("msg_") and len(lost.webhook_id) == 30
    assert (lost.event_type, lost.attempts, lost.first_attempt_at) == ("job.partial", 0, None)
    assert lost.next_attempt_at >= NOW and lost.message_due_at is None

    assert pending["had_row"].attempts == 7
    assert WebhookDelivery.objects.count() == 4
    assert WebhookDelivery.objects.filter(job_id=old_state["had_row"]).count() == 1


def test_an_old_retry_message_goes_on_from_its_row(old_state, receiver):
    _migrate(AFTER)
    _migrate("latest")  # the upgraded release runs on every migration
    WebhookDelivery.objects.filter(webhook_id="msg_retry").update(next_attempt_at=NOW)
    Job.objects.filter(pk=old_state["retrying"]).update(webhook_url=receiver.url)

    # The countdown message the old release queued, redelivered by the broker after the upgrade.
    kwargs = {"first_attempt_at": time.time(), "waits": 0}
    deliver_webhook.apply(args=(old_state["retrying"], "job.completed", "msg_retry"), kwargs=kwargs)

    assert [r.headers["webhook-id"] for r in receiver.requests] == ["msg_retry"]
    delivery = WebhookDelivery.objects.get(webhook_id="msg_retry")
    assert (delivery.status, delivery.attempts) == ("delivered", 3)
    assert delivery.first_attempt_at == T0 - timedelta(milliseconds=150)
    assert (
        "(attempt 3)"
        in JobEvent.objects.get(type="webhook.delivered", data__webhook_id="msg_retry").message
    )


def test_unapplying_keeps_the_rows(old_state):
    _migrate(AFTER)
    _migrate(BEFORE)
    assert WebhookDelivery.objects.filter(status="pending").count() == 4
