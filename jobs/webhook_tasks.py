"""The Celery task that delivers a webhook; the logic lives in webhooks.py (run_attempt)."""

from __future__ import annotations

import time

from celery import shared_task

from . import webhooks


@shared_task(name="jobs.deliver_webhook", bind=True, acks_late=True, max_retries=None)
def deliver_webhook(
    self, job_pk: int, event_type: str, webhook_id: str, first_attempt_at: float | None = None
) -> None:
    """One delivery attempt per run; reschedules itself until delivered, 410, or 24 h are spent.

    `first_attempt_at` travels with the retries so the 24 h window is measured from the first
    attempt, not from whenever a worker picked up the message.
    """
    first_attempt_at = first_attempt_at or time.time()
    next_in = webhooks.run_attempt(
        job_pk, event_type, webhook_id, self.request.retries + 1, first_attempt_at
    )
    if next_in is not None:
        raise self.retry(
            args=(job_pk, event_type, webhook_id),
            kwargs={"first_attempt_at": first_attempt_at},
            countdown=next_in,
        )
