"""Delivery rows for the webhook events that were on their way when the release before rows stopped.

That release kept a pending retry only in a Celery countdown message: after a crash-stop the
message sits unacknowledged in the broker until its visibility timeout (or is lost with it), and
a stop of the filesystem broker's worker lost it, while the database said nothing. Each attempt
was a JobEvent, though, so the events say what is pending, for each webhook id:

- its latest event is a `webhook.attempt` (it carries `next_retry_in`): a retry, due then, with
  its attempt count and the start of its 24 h window kept;
- its latest event is a `webhook.redeliver` ("Send again", not attempted yet): due now;
- and a job that ended in the last 24 h with a webhook URL and no webhook event at all had its
  first message queued and never attempted: a delivery due now, under a new id.

An old message that still arrives finds its row (jobs/webhook_deliveries.py `adopt`). Ids that
already have a row (a database that ran migration 0006's release) are left alone. Unapplying
keeps the rows: the table goes with 0006.
"""

import os
import time
from datetime import timedelta

from django.db import migrations
from django.db.models import Exists, OuterRef
from django.utils import timezone

TERMINAL = ("completed", "partial", "failed", "cancelled")
WINDOW = timedelta(hours=24)  # the old retries' window, and how far back a lost first message is
BATCH = 500
ATTEMPTED = ("webhook.attempt", "webhook.delivered", "webhook.failed")
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_id(prefix: str) -> str:
    """`<prefix>_<ULID>` as jobs.ids makes them (48-bit milliseconds, 80 random bits), here so
    that this migration does not change with the app's code."""
    value = (time.time_ns() // 1_000_000) << 80 | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(CROCKFORD[digit])
    return f"{prefix}_{''.join(reversed(chars))}"


def _pending_in(job_id: int, events: list, now) -> list[dict]:
    """The deliveries pending among one job's webhook events (in the order they were written)."""
    first_attempt: dict[str, object] = {}
    latest: dict[str, tuple] = {}
    for at, kind, data in events:
        webhook_id = data.get("webhook_id") if isinstance(data, dict) else None
        if not webhook_id:
            continue
        if kind in ATTEMPTED and webhook_id not in first_attempt:
            # The event is written once the POST has ended: its start is what the window counts.
            took = data.get("duration_ms")
            took = took if isinstance(took, int | float) else 0
            first_attempt[webhook_id] = at - timedelta(milliseconds=took)
        latest[webhook_id] = (at, kind, data)
    pending = []
    for webhook_id, (at, kind, data) in latest.items():
        event_type = data.get("event")
        if not event_type:
            continue
        wait = data.get("next_retry_in")
        if kind == "webhook.attempt" and isinstance(wait, int | float):
            attempts = data.get("attempt")
            pending.append(
                {
                    "job_id": job_id,
                    "webhook_id": webhook_id,
                    "event_type": event_type,
                    "attempts": attempts if isinstance(attempts, int) and attempts > 0 else 1,
                    "first_attempt_at": first_attempt.get(webhook_id, at),
                    "next_attempt_at": at + timedelta(seconds=wait),
                }
            )
        elif kind == "webhook.redeliver":
            pending.append(
                {
                    "job_id": job_id,
                    "webhook_id": webhook_id,
                    "event_type": event_type,
                    "attempts": 0,
                    "first_attempt_at": None,
                    "next_attempt_at": now,
                }
            )
    return pending


def _job_events(JobEvent):
    """(job id, [(at, type, data)]) for every job with webhook events, one job at a time."""
    rows = (
        JobEvent.objects.filter(type__startswith="webhook.")
        .order_by("job_id", "id")
        .values_list("job_id", "at", "type", "data")
        .iterator(chunk_size=2000)
    )
    job_id, events = None, []
    for row_job, at, kind, data in rows:
        if row_job != job_id:
            if events:
                yield job_id, events
            job_id, events = row_job, []
        events.append((at, kind, data))
    if events:
        yield job_id, events


def create_pending(apps, schema_editor) -> None:
    Job = apps.get_model("jobs", "Job")
    JobEvent = apps.get_model("jobs", "JobEvent")
    WebhookDelivery = apps.get_model("jobs", "WebhookDelivery")
    now = timezone.now()

    def save(batch: list[dict]) -> None:
        ids = [d["webhook_id"] for d in batch]
        known = set(
            WebhookDelivery.objects.filter(webhook_id__in=ids).values_list("webhook_id", flat=True)
        )
        with_url = set(
            Job.objects.filter(pk__in={d["job_id"] for d in batch})
            .exclude(webhook_url__isnull=True)
            .exclude(webhook_url="")
            .values_list("pk", flat=True)
        )
        WebhookDelivery.objects.bulk_create(
            WebhookDelivery(**d, created_at=now, message_due_at=None)
            for d in batch
            if d["webhook_id"] not in known and d["job_id"] in with_url
        )

    batch: list[dict] = []
    for job_id, events in _job_events(JobEvent):
        batch.extend(_pending_in(job_id, events, now))
        if len(batch) >= BATCH:
            save(batch)
            batch = []
    if batch:
        save(batch)

    never_sent = (
        Job.objects.filter(status__in=TERMINAL, finished_at__gte=now - WINDOW)
        .exclude(webhook_url__isnull=True)
        .exclude(webhook_url="")
        .exclude(
            Exists(JobEvent.objects.filter(job=OuterRef("pk"), type__startswith="webhook."))
        )
        .exclude(Exists(WebhookDelivery.objects.filter(job=OuterRef("pk"))))
        .values_list("pk", "status")
    )
    WebhookDelivery.objects.bulk_create(
        (
            WebhookDelivery(
                job_id=pk,
                webhook_id=new_id("msg"),
                event_type=f"job.{status}",
                created_at=now,
                next_attempt_at=now,
                message_due_at=None,
            )
            for pk, status in never_sent.iterator(chunk_size=BATCH)
        ),
        batch_size=BATCH,
    )


class Migration(migrations.Migration):
    dependencies = [("jobs", "0006_webhook_deliveries")]

    operations = [migrations.RunPython(create_pending, migrations.RunPython.noop, elidable=True)]
