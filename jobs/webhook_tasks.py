"""The Celery task that delivers a webhook; the logic lives in webhooks.py (run_attempt)."""

from __future__ import annotations

import time

from celery import shared_task

from . import webhooks


@shared_task(name="jobs.deliver_webhook", bind=True, acks_late=True, max_retries=None)
def deliver_webhook(
    self,
    job_pk: int,
    event_type: str,
    webhook_id: str,
    first_attempt_at: float | None = None,
    waiting_since: float | None = None,
    waits: int = 0,
) -> None:
    """One delivery attempt per run; reschedules itself until delivered, 410, or 24 h are spent.

    `first_attempt_at` travels with the retries so the 24 h window is measured from the first
    attempt, not from whenever a worker picked up the message. Before the first attempt, a
    cancelled job's event waits for the rows still running to finish (`waits` of its runs were
    such waits, not attempts).
    """
    args = (job_pk, event_type, webhook_id)
    if first_attempt_at is None:
        waiting_since = waiting_since or time.time()
        wait = webhooks.settle_delay(job_pk, event_type, waiting_since)
        if wait is not None:
            raise self.retry(
                args=args,
                kwargs={"waiting_since": waiting_since, "waits": waits + 1},
                countdown=wait,
            )
    first_attempt_at = first_attempt_at or time.time()
    attempt = self.request.retries + 1 - waits
    next_in = webhooks.run_attempt(job_pk, event_type, webhook_id, attempt, first_attempt_at)
    if next_in is not None:
        raise self.retry(
            args=args,
            kwargs={"first_attempt_at": first_attempt_at, "waits": waits},
            countdown=next_in,
        )
