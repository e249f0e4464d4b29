"""Celery's consumer, reconnecting to a broker that came back within a second.

When the broker goes away, the consumer retries its connection at kombu's default intervals:
2 s, then 4, 6, 8 … up to 30 s between attempts. A broker back after an outage of a few seconds
then waits for the next attempt, which can be several seconds away, and with it every queued
step of every job (a Redis restart of 2 s cost up to 4 s of stalled progress; seven seconds, up
to five). Retrying at most every second costs one refused connect a second while it is down.
"""

from __future__ import annotations

from celery.worker import consumer

RETRY_INTERVALS = {"interval_start": 0, "interval_step": 0.5, "interval_max": 1.0}


class Consumer(consumer.Consumer):
    def ensure_connected(self, conn):
        # Celery's own ensure_connected decides whether to retry at all and logs each attempt;
        # only the intervals it leaves at kombu's defaults change.
        ensure = conn.ensure_connection

        def ensure_quickly(*args, **kwargs):
            return ensure(*args, **{**kwargs, **RETRY_INTERVALS})

        conn.ensure_connection = ensure_quickly
        return super().ensure_connected(conn)
