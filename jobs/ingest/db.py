"""Bulk insert of ingested rows: COPY on PostgreSQL (psycopg 3), batched executemany elsewhere.

The ORM is kept out of the per-row path on every backend (figures in docs/performance.md).
On SQLite, whose one write lock covers the whole file, every batch is its own short transaction
(see insert_rows); rows are parsed and encoded before the lock is taken.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from itertools import islice

import orjson
from django.conf import settings
from django.db import connections, router, transaction

from ..models import Row, RowStatus
from .detect import InputError, TableInfo, _Errors
from .validation import _check_header, _prepare, _Scan

BATCH_ROWS = 2000
# Rows a SQLite ingest writes in one transaction: the lock is held for milliseconds, so a web
# request's write waits for one batch at most, never for the whole file.
SQLITE_BATCH_ROWS = 5000
# What a new row holds besides its own (job, index, ref, data): the one place that names these
# columns and their values, for COPY, SQLite's statement and the executemany fallback alike.
_NEW_ROW: dict[str, str | int] = {"status": RowStatus.PENDING.value, "attempts": 0}
_FIELDS = ("job", "index", "ref", "data", *_NEW_ROW)


def insert_rows(
    job, rows: Iterable[tuple[int, str, list]], *, each_batch: Callable[[], None] | None = None
) -> int:
    """Write (index, ref, values) rows for `job` as pending rows; returns how many were written.

    On SQLite the rows go in batches of SQLITE_BATCH_ROWS, each in a transaction of its own
    (a savepoint if the caller holds one), which first calls `each_batch` (it may raise to stop
    the ingest: that batch is rolled back, the ones before it stay).
    """
    connection = connections[router.db_for_write(Row)]
    table, columns = _table_and_columns(connection)
    if connection.vendor == "sqlite":
        constants = "".join(f", {_sql_literal(value)}" for value in _NEW_ROW.values())
        sql = f"INSERT INTO {table} ({columns}) VALUES ({int(job.pk)}, ?, ?, ?{constants})"
        return _sqlite_batches(connection, sql, rows, each_batch)
    with connection.cursor() as cursor:
        raw = cursor.cursor
        if connection.vendor == "postgresql" and hasattr(raw, "copy"):
            return _copy(raw, copy_statement(connection), job.pk, rows)
        sql = f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(_FIELDS))})"
        return _executemany(cursor, connection, sql, job.pk, rows)


def _table_and_columns(connection) -> tuple[str, str]:
    qn = connection.ops.quote_name
    columns = ", ".join(qn(Row._meta.get_field(name).column) for name in _FIELDS)
    return qn(Row._meta.db_table), columns


def copy_statement(connection) -> str:
    """The ingest's COPY into the row table; its lines are _copy_blocks' (benchmarks use both)."""
    table, columns = _table_and_columns(connection)
    return f"COPY {table} ({columns}) FROM STDIN"


# COPY's text format gives meaning to these four characters; everything else goes as it is.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
# Most refs hold none of them, and looking for one costs far less than translating each ref.
_NEEDS_ESCAPE = re.compile(r"[\\\t\n\r]").search
_WRITE_BYTES = 256 * 1024


def _sql_literal(value: str | int) -> str:
    return str(int(value)) if isinstance(value, int) else "'" + value.replace("'", "''") + "'"


def _copy(raw_cursor, sql: str, job_id: int, rows: Iterable[tuple[int, str, list]]) -> int:
    """Text-format COPY of the rows, its lines built here and sent in large blocks."""
    written = 0
    with raw_cursor.copy(sql) as copy:
        for block, count in _copy_blocks(job_id, rows):
            copy.write(block)
            written += count
    return written


def _copy_blocks(job_id: int, rows: Iterable[tuple[int, str, list]]) -> Iterator[tuple[bytes, int]]:
    """COPY's text lines for the rows, as (block of about _WRITE_BYTES, rows in it).

    orjson writes a row's JSON as UTF-8 bytes in one C call (psycopg's write_row formats value
    by value in Python). JSON text never holds a raw tab or newline (control characters are
    escaped), so only its backslashes need doubling for COPY. Non-finite numbers never get
    here (every reader refuses them), which matters: orjson would write them as null.
    """
    dumps = orjson.dumps
    encode_error = orjson.JSONEncodeError
    needs_escape = _NEEDS_ESCAPE
    constants = "".join(f"\t{value}" for value in _NEW_ROW.values()).encode()
    line = b"%d\t%%d\t%%s\t%%s%s\n" % (job_id, constants)
    block: list[bytes] = []
    size = 0
    for index, ref, values in rows:
        try:
            data = dumps(values)
        except encode_error:  # an integer beyond 64 bits (JSONL): the slower encoder
            data = _JSON_FALLBACK(values).encode()
        if not ref.isalnum() and needs_escape(ref):
            ref = ref.translate(_COPY_ESCAPES)
        row = line % (index, ref.encode(), data.replace(b"\\", b"\\\\"))
        block.append(row)
        size += len(row)
        if size >= _WRITE_BYTES:
            yield b"".join(block), len(block)
            block.clear()
            size = 0
    if block:
        yield b"".join(block), len(block)


def _sqlite_batches(connection, sql: str, rows: Iterable[tuple[int, str, list]], each_batch) -> int:
    # The parameters are (index, ref, JSON text): the job, status and attempts are constants
    # of the prepared statement, and sqlite3's executemany binds and steps them in C.
    feed = _sqlite_params(rows)
    written = 0
    while batch := list(islice(feed, SQLITE_BATCH_ROWS)):
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            if each_batch is not None:
                each_batch()
            cursor.cursor.executemany(sql, batch)
        written += len(batch)
    return written


def _sqlite_params(rows: Iterable[tuple[int, str, list]]) -> Iterator[tuple[int, str, str]]:
    dumps = orjson.dumps
    for index, ref, values in rows:
        try:
            data = dumps(values).decode()
        except orjson.JSONEncodeError:  # an integer beyond 64 bits (JSONL): the slower encoder
            data = _JSON_FALLBACK(values)
        yield index, ref, data


# allow_nan=False: ingest refuses non-finite numbers; should one get here, it fails loudly.
_JSON_FALLBACK = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode


def _executemany(
    cursor, connection, sql: str, job_id: int, rows: Iterable[tuple[int, str, list]]
) -> int:
    prep = Row._meta.get_field("data").get_db_prep_save
    constants = tuple(_NEW_ROW.values())
    batch: list[tuple] = []
    written = 0
    for index, ref, values in rows:
        batch.append((job_id, index, ref, prep(values, connection), *constants))
        if len(batch) >= BATCH_ROWS:
            cursor.executemany(sql, batch)
            written += len(batch)
            batch.clear()
    if batch:
        cursor.executemany(sql, batch)
        written += len(batch)
    return written


def write_rows(
    job,
    source,
    *,
    filename: str | None = None,
    skip: int = 0,
    each_batch: Callable[[], None] | None = None,
) -> TableInfo:
    """Stream the input's rows into jobs.Row for `job` (already saved), re-checking as it goes.

    index is the 0-based input order, ref the id column's value (job.id_column, else the one the
    input implies) or the 1-based row number. Raises InputError with every problem found (and
    writes no row after the first): call it inside a transaction so the caller can roll back.
    Returns the TableInfo with the final columns and rows_written (all of the input's rows);
    the caller updates the job from it.

    On SQLite the rows are committed in batches (insert_rows, which calls
    `each_batch`): the caller deletes them if this raises. `skip` leaves out the first rows,
    which an earlier attempt wrote (every row is still read and checked).
    """
    info, problems = _prepare(source, filename)
    errors = _Errors()
    for problem in problems:
        errors.add(problem["line"], problem["column"], problem["message"])
    id_column = _check_header(info, errors, job.id_column or info.id_column, ())
    scan = _Scan(source, info, errors, id_column=id_column, max_rows=settings.BATCHHUB_MAX_ROWS)

    def rows() -> Iterator[tuple[int, str, list]]:
        index = 0
        try:
            for _line, ref, values in scan:
                if errors.total:
                    continue  # keep reading to report every problem, but write nothing more
                if index >= skip:
                    yield index, ref if ref is not None else str(index + 1), values
                index += 1
        except InputError as exc:
            errors.extend(exc)
        scan.check_not_empty()
        if errors.total:
            # Raised from inside the writer's loop, so a COPY in progress is aborted, not completed.
            raise errors.error()

    info.rows_written = skip + insert_rows(job, rows(), each_batch=each_batch)
    return info
