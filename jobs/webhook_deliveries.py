"""When a job's webhook attempts run, and that each runs once: a WebhookDelivery row per event.

`states.transition()` calls `on_terminal(job)` inside its transaction: a delivery row is made,
due now, and after commit a `jobs.deliver_webhook` message names it. A sender (`run`) takes the
row with a conditional UPDATE (a claim with a lease), makes one attempt (jobs/webhooks.py), and
sets when the next is due: a wait of a minute or less also gets a countdown message, a longer one
only the row. The reaper (`dispatch_due`, every few seconds) sends a message for every delivery
that is due and that no message is on its way to: one that a countdown lost with a worker restart,
a 2-hour wait, a sender that died holding its claim once the claim lapses. A message that comes
twice (a broker's redelivery, the reaper's and a countdown's) finds the row taken or not due, and
makes no attempt; receivers can still drop a duplicate by `webhook-id`, the same on every attempt.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from . import enqueue, webhooks
from .ids import new_id
from .models import TERMINAL, Job, JobEvent, WebhookDelivery

logger = logging.getLogger(__name__)

TASK = "jobs.deliver_webhook"
Status = WebhookDelivery.Status

# A wait this short also gets a countdown message (the reaper alone would add its interval).
COUNTDOWN_MAX = 60.0
# A due delivery's message is sent again when it has not been taken this long after it was due
# to arrive: long enough for a busy worker to reach its queue, short against the retry waits.
MESSAGE_GRACE = timedelta(seconds=60)
# The reaper sends at most this many messages a round; the rest wait for the next rounds.
DISPATCH_BATCH = 500

# A cancel lets the rows already running finish (API.md; an I/O loop's rows in a request are
# written by their threads when the answers come back), and a big job's pending rows are
# cancelled in batches after the request: the job.cancelled event waits this long at most for
# both, so that the job object it carries holds the final counts.
SETTLE_SECONDS = 30.0
SETTLE_EVERY = 0.5
# A claim outlives the longest attempt (the wait for running rows, then the receiver's timeout)
# by this much before another sender may take the delivery.
CLAIM_MARGIN = 60.0


# --- making deliveries ----------------------------------------------------------------------------


# Where a delivery can start without a message: a worker process's own sender threads
# (jobs/webhook_tasks.py registers them). A job mostly ends in a worker, whose queue may hold
# hundreds of job steps ahead of a message.
_start_here: Callable[[int], bool] | None = None


def start_here(starter: Callable[[int], bool] | None) -> None:
    global _start_here
    _start_here = starter


def _start(pk: int) -> None:
    if _start_here is None or not _start_here(pk):
        enqueue.send(TASK, pk)


def schedule(job: Job, event_type: str, superseding: str) -> WebhookDelivery:
    """A delivery of `event_type` for `job`, due now, started once the caller commits; the job's
    deliveries still pending make no more attempts (`superseding` says why, in their events)."""
    _supersede(job, superseding)
    now = timezone.now()
    delivery = WebhookDelivery.objects.create(
        job=job,
        webhook_id=new_id("msg"),
        event_type=event_type,
        next_attempt_at=now,
        message_due_at=now,
    )
    transaction.on_commit(lambda: _start(delivery.pk))
    return delivery


def _supersede(job: Job, why: str) -> None:
    stale = WebhookDelivery.objects.filter(job=job, status=Status.PENDING)
    for webhook_id, event_type in stale.values_list("webhook_id", "event_type"):
        _dropped(job, webhook_id, event_type, why)
    # An attempt under way finishes and records itself; its delivery stays ended.
    stale.update(status=Status.FAILED, claimed_until=None, claim="")


def _dropped(job: Job, webhook_id: str, event_type: str, why: str) -> None:
    JobEvent.objects.create(
        job=job,
        type="webhook.dropped",
        message=f"{event_type} ({webhook_id}): no more attempts, {why}.",
        actor="system",
        data={"webhook_id": webhook_id, "event": event_type},
    )


def on_terminal(job: Job) -> None:
    """Called by states.transition() inside its transaction when `job` reaches a terminal status.

    Sends after commit only (a rolled-back transition must not notify anyone), from a worker (a
    slow receiver must not hold a request or a worker loop).
    """
    if not job.webhook_url or job.status not in TERMINAL:
        return
    schedule(job, webhooks.event_type_for(job), "the job ended again")


class CannotRedeliver(Exception):
    """The job has no terminal event to send again (no webhook URL, or not finished)."""


def redeliver(job: Job, actor: str) -> str:
    """Send the job's current terminal event again, as a new message; returns its webhook id."""
    if not job.webhook_url:
        raise CannotRedeliver("This job has no webhook URL.")
    if job.status not in TERMINAL:
        raise CannotRedeliver("The job has not finished yet: there is no event to send again.")
    event_type = webhooks.event_type_for(job)
    with transaction.atomic():  # its event before any attempt's; the send after both
        return _redeliver(job, event_type, actor)


def _redeliver(job: Job, event_type: str, actor: str) -> str:
    delivery = schedule(job, event_type, "the event was sent again as a new message")
    JobEvent.objects.create(
        job=job,
        type="webhook.redeliver",
        message=f"{event_type} sent again to {job.webhook_url}",
        actor=actor,
        data={"webhook_id": delivery.webhook_id, "event": event_type},
    )
    return delivery.webhook_id


def adopt(
    job_pk: int, event_type: str, webhook_id: str, first_attempt_at: float | None = None
) -> int | None:
    """The delivery for a message queued before delivery rows: (job, event type, webhook id),
    and a retry's `first_attempt_at` (unix seconds); None when there is nothing to send.

    Its row, if migration 0007 or an earlier copy of the message made one, is used as it is.
    Otherwise the row goes on where the message was: its attempts so far (the old release's
    events) and its 24 h window. A first message whose job already has a delivery of this end
    (0007 made one for every job whose first message had left no event) is not sent twice.
    """
    existing = WebhookDelivery.objects.filter(webhook_id=webhook_id).first()
    if existing is not None:
        return existing.pk
    job = Job.objects.filter(pk=job_pk).first()
    if job is None:
        return None
    events = JobEvent.objects.filter(
        job=job, type__startswith="webhook.", data__webhook_id=webhook_id
    )
    if events.filter(type__in=("webhook.delivered", "webhook.failed")).exists():
        return None  # a copy of a message whose delivery ended (delivered, or given up)
    attempts = events.filter(type="webhook.attempt").count()
    if (
        first_attempt_at is None
        and job.finished_at is not None
        and not events.exists()
        and job.webhook_deliveries.filter(
            event_type=event_type, created_at__gte=job.finished_at
        ).exists()
    ):
        logger.info("webhook %s: its job's end is on its way under another id", webhook_id)
        return None
    started = None
    if first_attempt_at is not None:
        started = datetime.fromtimestamp(first_attempt_at, tz=UTC)
    try:
        with transaction.atomic():
            delivery = WebhookDelivery.objects.create(
                job=job,
                webhook_id=webhook_id,
                event_type=event_type,
                attempts=attempts,
                first_attempt_at=started,
            )
    except IntegrityError:
        # Another copy of the message made it meanwhile.
        delivery = WebhookDelivery.objects.filter(webhook_id=webhook_id).first()
        if delivery is None:
            return None  # its job was deleted meanwhile
    return delivery.pk


# --- finding work ---------------------------------------------------------------------------------


def _unclaimed(now: datetime) -> Q:
    return Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)


def dispatch_due(now: datetime | None = None) -> int:
    """Send a message for each delivery that is due, free, and has none on its way (the reaper)."""
    now = now or timezone.now()
    due = (
        WebhookDelivery.objects.filter(status=Status.PENDING, next_attempt_at__lte=now)
        .filter(_unclaimed(now))
        .filter(Q(message_due_at__isnull=True) | Q(message_due_at__lt=now - MESSAGE_GRACE))
        .order_by("next_attempt_at")
    )
    pks = list(due.values_list("pk", flat=True)[:DISPATCH_BATCH])
    if pks:
        WebhookDelivery.objects.filter(pk__in=pks).update(message_due_at=now)
        transaction.on_commit(lambda: [enqueue.send(TASK, pk) for pk in pks])
    return len(pks)


def claim(pk: int, now: datetime | None = None) -> str | None:
    """Take the delivery for one attempt if it is due and free; the claim's token, or None."""
    now = now or timezone.now()
    lease = SETTLE_SECONDS + settings.BATCHHUB_WEBHOOK_TIMEOUT + CLAIM_MARGIN
    token = secrets.token_hex(8)
    taken = (
        WebhookDelivery.objects.filter(pk=pk, status=Status.PENDING, next_attempt_at__lte=now)
        .filter(_unclaimed(now))
        .update(claimed_until=now + timedelta(seconds=lease), claim=token)
    )
    return token if taken else None


def destination(pk: int) -> str | None:
    """Where the pending delivery's next attempt goes (webhooks.destination), or None when it
    has no URL or is no longer pending: run() ends it without waiting on anyone."""
    url = (
        WebhookDelivery.objects.filter(pk=pk, status=Status.PENDING)
        .values_list("job__webhook_url", flat=True)
        .first()
    )
    return webhooks.destination(url) if url else None


# --- one attempt ----------------------------------------------------------------------------------


def settle_delay(job_pk: int, event_type: str, waiting_since: float) -> float | None:
    """Seconds to wait before the first attempt of a job.cancelled event while rows of the job
    are still running or not yet cancelled, or None to send now."""
    if event_type != "job.cancelled" or time.time() - waiting_since >= SETTLE_SECONDS:
        return None
    counts = Job.objects.filter(pk=job_pk).values_list("running", "pending").first()
    return SETTLE_EVERY if counts and any(counts) else None


def settle(pk: int) -> None:
    """A job.cancelled event's wait for its job's running rows, made before the delivery takes one
    of its destination's threads (run() then waits only for what is left): the events of jobs
    cancelled together wait side by side, not in turn on their receiver's few threads."""
    delivery = (
        WebhookDelivery.objects.filter(pk=pk, status=Status.PENDING, attempts=0)
        .only("job_id", "event_type", "created_at")
        .first()
    )
    if delivery is not None:
        _settle(delivery)


def _settle(delivery: WebhookDelivery) -> None:
    waiting_since = delivery.created_at.timestamp()
    while (wait := settle_delay(delivery.job_id, delivery.event_type, waiting_since)) is not None:
        _release_database()
        time.sleep(wait)


def _release_database() -> None:
    """Close this thread's connection before waiting on a receiver or a timer: a worker's
    threads x its processes x its machines would otherwise hold that many database connections
    through every slow receiver, past PostgreSQL's max_connections."""
    if not connection.in_atomic_block:  # a caller's transaction (tests run in one) stays
        connection.close()


def run(pk: int) -> bool:
    """Make the delivery's next attempt if it is due and nobody else holds it; whether one ran."""
    token = claim(pk)
    if token is None:
        return False
    delivery = WebhookDelivery.objects.filter(pk=pk).first()
    if delivery is None:
        return False  # its job was deleted meanwhile: nobody to tell
    # Superseded meanwhile (status no longer pending), or a lapsed claim taken by another
    # sender: the row is no longer this sender's to change.
    mine = WebhookDelivery.objects.filter(pk=pk, claim=token, status=Status.PENDING)
    if delivery.attempts == 0:
        _settle(delivery)
    job = Job.objects.select_related("owner").filter(pk=delivery.job_id).first()
    if job is None:
        return False
    if not job.webhook_url:
        # The URL was removed meanwhile: nobody to tell.
        mine.update(status=Status.FAILED, claimed_until=None, claim="")
        return False
    if webhooks.event_type_for(job) != delivery.event_type:
        # Retried since (or ended otherwise): the event no longer describes the job, and its
        # next end sends its own.
        if mine.update(status=Status.FAILED, claimed_until=None, claim=""):
            _dropped(job, delivery.webhook_id, delivery.event_type, "the job changed since")
        return False
    if not mine.exists():
        return False  # superseded while it waited for the job's running rows
    delivery.job = job  # as it is now: a cancelled job's counts once its running rows ended
    first_attempt_at = delivery.first_attempt_at or timezone.now()
    number = delivery.attempts + 1
    _release_database()
    attempt = webhooks.deliver_once(job, delivery.event_type, delivery.webhook_id, number)
    next_in = None
    if attempt.retry:
        elapsed = (timezone.now() - first_attempt_at).total_seconds()
        next_in = webhooks.retry_delay(number, elapsed)
    _record(delivery, token, attempt, next_in, first_attempt_at)
    logger.info("webhook %s for %s: %s", delivery.webhook_id, job.public_id, attempt.outcome)
    return True


def _record(delivery, token, attempt, next_in, first_attempt_at) -> None:
    now = timezone.now()
    fields = {
        "attempts": F("attempts") + 1,
        "first_attempt_at": first_attempt_at,
        "claimed_until": None,
        "claim": "",
    }
    if attempt.delivered:
        fields["status"] = Status.DELIVERED
    elif next_in is None:
        fields["status"] = Status.FAILED
    else:
        due = now + timedelta(seconds=next_in)
        fields["next_attempt_at"] = due
        # Without a countdown no message is on its way: the reaper sends one once it is due.
        fields["message_due_at"] = due if next_in <= COUNTDOWN_MAX else None
    try:
        with transaction.atomic():
            # Delivered counts whatever happened to the row meanwhile; a retry only while the
            # row is still pending and this sender's (not superseded by "Send again").
            held = WebhookDelivery.objects.filter(pk=delivery.pk, claim=token)
            if not attempt.delivered:
                held = held.filter(status=Status.PENDING)
            kept = held.update(**fields)
            if not kept and next_in is not None:
                next_in = None  # superseded during the attempt: none follows
            webhooks.record_attempt(
                delivery.job, delivery.webhook_id, delivery.event_type, attempt, next_in
            )
            if kept and next_in is not None and next_in <= COUNTDOWN_MAX:
                transaction.on_commit(lambda: enqueue.send_later(TASK, next_in, delivery.pk))
    except IntegrityError:
        if Job.objects.filter(pk=delivery.job_id).exists():
            raise
        # The job was deleted during the attempt, its deliveries with it.
