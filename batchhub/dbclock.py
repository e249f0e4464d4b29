"""The database's clock: the one clock every machine of a deployment shares.

The reaper compares when a job's steps were queued and started (written by the workers) with
when its own message was sent (by beat): each machine's own clock may be seconds off the others,
which would put a step queued after the reaper's message before it. Those times (the steps'
and the reaper message's) are the database's. The leases and `updated_at` are still written by
each machine's clock and compared with this one: a few seconds of skew there only moves when a
stall is noticed.
"""

from __future__ import annotations

from datetime import UTC, datetime

from django.db import connection


def now() -> datetime:
    """The database's current time (aware, UTC)."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            # As Django's Now() writes it on SQLite: UTC text, to the millisecond.
            cursor.execute("SELECT STRFTIME('%Y-%m-%d %H:%M:%f', 'now')")
            return datetime.fromisoformat(cursor.fetchone()[0]).replace(tzinfo=UTC)
        # As Django's Now() writes it on PostgreSQL: not the transaction's start.
        cursor.execute("SELECT STATEMENT_TIMESTAMP()")
        return cursor.fetchone()[0].astimezone(UTC)
