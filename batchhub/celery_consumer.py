"""Celery's consumer, reconnecting to a broker that came back within a second, and surviving
the close of the connection it lost.

When the broker goes away, the consumer retries its connection at kombu's default intervals:
2 s, then 4, 6, 8 … up to 30 s between attempts. A broker back after an outage of a few seconds
then waits for the next attempt, which can be several seconds away, and with it every queued
step of every job (a Redis restart of 2 s cost up to 4 s of stalled progress; seven seconds, up
to five). Retrying at most every second costs one refused connect a second while it is down.

After a lost connection Celery first collects it, then closes it. When closing its channel failed
during the collect (Redis still down), the collect has already taken the transport apart, and the
second close tries to put the unacknowledged messages back through it: kombu raises
AttributeError, which Celery does not expect there, and the whole worker exits ("Unrecoverable
error"; three worker deaths in three Redis outages of 15-20 s). That close is let fail quietly:
the messages stay in Redis's unacked set, which gives them back after the visibility timeout,
and the tasks they started run to the end here (tasks are not cancelled on connection loss).
"""

from __future__ import annotations

from collections.abc import Callable

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

    def on_connection_error_after_connected(self, exc):
        if self.connection is not None:
            self.connection.close = closing_quietly(self.connection.close)
        return super().on_connection_error_after_connected(exc)


def closing_quietly(close: Callable[[], None]) -> Callable[[], None]:
    def close_quietly() -> None:
        try:
            close()
        except AttributeError:
            pass  # a transport the collect took apart (above)

    return close_quietly
