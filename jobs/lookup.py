"""One of a user's jobs by public id, in one precompiled query: the read behind every status poll.

A status poll (GET /api/v1/jobs/{id}, the job page's live partial) is the request the site
serves most: every open job page asks every second, and scripts poll too. Building
services.get_job's ORM query costs about 1 ms of Python per request, several times the query
itself. So, as apikeys/lookup.py does for keys, the SQL is compiled once per database alias from
the model's own metadata, and the row becomes a Job through the backend's own converters, as the
ORM would load it. Same rule as services.get_job: the owner's job, not expired, else a 404.
tests/jobs/test_lookup.py checks that both return the same job.
"""

from __future__ import annotations

from functools import cache
from typing import Any, NamedTuple

from django.db import connections, router
from django.http import Http404
from django.utils import timezone

from .models import Job, JobEvent


class _Plan(NamedTuple):
    sql: str
    attnames: list[str]
    # Per selected column: the converters the ORM would apply, with the expression they expect.
    converters: list[tuple[list[Any], Any]]


@cache
def _plan(alias: str, last_event: bool) -> _Plan:
    connection = connections[alias]
    qn = connection.ops.quote_name
    meta = Job._meta
    fields = list(meta.concrete_fields)
    table = qn(meta.db_table)

    def column(name: str) -> str:
        return f"{table}.{qn(meta.get_field(name).column)}"

    columns = ", ".join(f"{table}.{qn(f.column)}" for f in fields)
    if last_event:
        # The job page's poll also wants its newest timeline entry: same round trip.
        events = qn(JobEvent._meta.db_table)
        job_column = qn(JobEvent._meta.get_field("job").column)
        columns += (
            f", (SELECT max({events}.{qn('id')}) FROM {events} "
            f"WHERE {events}.{job_column} = {table}.{qn(meta.pk.column)})"
        )
    sql = (
        f"SELECT {columns} FROM {table} "
        f"WHERE {column('public_id')} = %s AND {column('owner')} = %s "
        f"AND ({column('expires_at')} IS NULL OR {column('expires_at')} > %s)"
    )
    converters = []
    for field in fields:
        col = field.get_col(meta.db_table)
        converters.append(
            (connection.ops.get_db_converters(col) + col.get_db_converters(connection), col)
        )
    return _Plan(sql, [f.attname for f in fields], converters)


def get_job(user, public_id: str, *, last_event: bool = False) -> Job:
    """The user's job, or 404, like services.get_job.

    With `last_event`, the job also carries `last_event_id`: its newest JobEvent's id, 0 if none.
    """
    if "\x00" in public_id:
        raise Http404("No such job.")  # no id has one, and PostgreSQL refuses it in a query
    alias = router.db_for_read(Job)
    plan = _plan(alias, last_event)
    connection = connections[alias]
    now = Job._meta.get_field("expires_at").get_db_prep_value(timezone.now(), connection)
    with connection.cursor() as cursor:
        cursor.execute(plan.sql, [public_id, user.pk, now])
        row = cursor.fetchone()
    if row is None:
        raise Http404("No such job.")
    newest_event = row[-1] if last_event else None
    if last_event:
        row = row[:-1]
    values = []
    for value, (funcs, expression) in zip(row, plan.converters, strict=True):
        for func in funcs:
            value = func(value, expression, connection)
        values.append(value)
    job = Job.from_db(alias, plan.attnames, values)
    if last_event:
        job.last_event_id = newest_event or 0
    return job
