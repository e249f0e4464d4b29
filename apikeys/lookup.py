"""Load a key and its owner by lookup id: the one query on the API authentication hot path.

Every API request runs it, and building the equivalent ORM query
(`APIKey.objects.select_related("owner").get(lookup_id=…)`) costs far more Python than the query
itself (docs/performance.md). So the SQL is compiled once per database alias from the models'
own metadata, and rows are turned into model instances with the backend's own converters (e.g.
SQLite's text timestamps into aware datetimes), exactly as the ORM would. tests/apikeys checks
that it returns what the ORM returns.
"""

from __future__ import annotations

from functools import cache
from typing import Any, NamedTuple

from django.db import connections, router

from .models import APIKey


class _Plan(NamedTuple):
    sql: str
    key_attnames: list[str]
    user_attnames: list[str]
    # Per selected column: the converters the ORM would apply, with the expression they expect.
    converters: list[tuple[list[Any], Any]]


def _owner_field():
    return APIKey._meta.get_field("owner")


@cache
def _plan(alias: str) -> _Plan:
    connection = connections[alias]
    qn = connection.ops.quote_name
    owner = _owner_field()
    user_model = owner.related_model
    key_fields = list(APIKey._meta.concrete_fields)
    user_fields = list(user_model._meta.concrete_fields)
    columns = [("k", f) for f in key_fields] + [("u", f) for f in user_fields]
    select = ", ".join(f"{qn(table)}.{qn(field.column)}" for table, field in columns)
    target = owner.target_field
    sql = (
        f"SELECT {select} FROM {qn(APIKey._meta.db_table)} {qn('k')} "
        f"INNER JOIN {qn(user_model._meta.db_table)} {qn('u')} "
        f"ON {qn('u')}.{qn(target.column)} = {qn('k')}.{qn(owner.column)} "
        f"WHERE {qn('k')}.{qn(APIKey._meta.get_field('lookup_id').column)} = %s"
    )
    converters = []
    for table, field in columns:
        col = field.get_col(table)
        converters.append(
            (connection.ops.get_db_converters(col) + col.get_db_converters(connection), col)
        )
    return _Plan(
        sql,
        [f.attname for f in key_fields],
        [f.attname for f in user_fields],
        converters,
    )


def key_with_owner(lookup_id: str) -> APIKey | None:
    """The key with this lookup id and its owner (as select_related would load it), or None."""
    alias = router.db_for_read(APIKey)
    plan = _plan(alias)
    connection = connections[alias]
    with connection.cursor() as cursor:
        cursor.execute(plan.sql, [lookup_id])
        row = cursor.fetchone()
    if row is None:
        return None
    values = []
    for value, (funcs, expression) in zip(row, plan.converters, strict=True):
        for func in funcs:
            value = func(value, expression, connection)
        values.append(value)
    split = len(plan.key_attnames)
    key = APIKey.from_db(alias, plan.key_attnames, values[:split])
    user = _owner_field().related_model.from_db(alias, plan.user_attnames, values[split:])
    _owner_field().set_cached_value(key, user)
    return key
