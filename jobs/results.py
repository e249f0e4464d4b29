"""Results export: every row in input order, streamed from the database in ~64 KB pieces.

PostgreSQL streams with COPY … TO STDOUT (several times faster than a cursor); other databases
read in batches with a keyset on (job, index). Nothing holds the whole result in memory.
"""

from __future__ import annotations

import csv
import io
import json
import re
import unicodedata
from collections.abc import Iterator
from typing import Any

from django.db import connection

from .models import Job, Row, RowStatus
from .processors import get_processor_class

FORMATS = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/x-ndjson; charset=utf-8",
    "json": "application/json; charset=utf-8",
}
STATUS_FILTERS = ("all", "succeeded", "failed")
ROW_STATUS_FILTERS = ("all", *RowStatus.values)  # the row listing's ?status=
BUFFER_BYTES = 64 * 1024
BATCH_ROWS = 5000

# ASCII digits only, as the SQL twin below: a sign before another script's digits is no number.
_NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")
# A leading line break counts too: a reader that splits the cell on it would see a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")


def neutralise(value: str) -> str:
    """A cell a spreadsheet would run as a formula gets a leading apostrophe (OWASP's advice).

    Plain numbers such as -3.5 are left alone: they are data, not formulas.
    """
    if value and value[0] in _FORMULA_START and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def output_columns(job: Job) -> list[str]:
    cls = get_processor_class(job.processor)
    if cls is not None:
        try:
            return cls(job.params).output_columns()
        except Exception:  # params of an older processor version: fall back to what rows hold
            pass
    first = (
        Row.objects.filter(job=job, output__isnull=False)
        .order_by("index")
        .values_list("output", flat=True)
        .first()
    )
    return list(first or {})


def _status_values(status: str) -> tuple[str, ...] | None:
    if status == "succeeded":
        return (RowStatus.SUCCEEDED,)
    if status == "failed":
        return (RowStatus.FAILED,)
    return None


def iter_rows(
    job: Job, status: str = "all"
) -> Iterator[tuple[int, str, str, list, dict | None, str | None]]:
    """(index, ref, status, data, output, error) in input order."""
    wanted = _status_values(status)
    if connection.vendor == "postgresql":
        yield from _iter_copy(job, wanted)
        return
    qs = Row.objects.filter(job=job)
    if wanted:
        qs = qs.filter(status__in=wanted)
    last = -1
    while True:
        batch = list(
            qs.filter(index__gt=last)
            .order_by("index")
            .values_list("index", "ref", "status", "data", "output", "error")[:BATCH_ROWS]
        )
        if not batch:
            return
        yield from batch
        last = batch[-1][0]


def _job_rows(job_pk: int, wanted: tuple[str, ...] | None) -> tuple[str, list[Any]]:
    """`<row table> WHERE …` for a job's rows (of these statuses), and its parameters: what every
    COPY … TO here reads from."""
    where, params = f"{Row._meta.db_table} WHERE job_id = %s", [job_pk]
    if wanted:
        where += " AND status = ANY(%s)"
        params.append(list(wanted))
    return where, params


def _iter_copy(job: Job, wanted: tuple[str, ...] | None):
    where, params = _job_rows(job.pk, wanted)
    sql = (
        f'COPY (SELECT "index", ref, status, data::text, output::text, error FROM {where} '
        f'ORDER BY "index") TO STDOUT'
    )
    loads = json.loads
    connection.ensure_connection()
    # Django's error classes, as its own cursors raise them: a database lost mid-export is then
    # a 503 to the page or API and marks the connection for a health check.
    with connection.wrap_database_errors, connection.connection.cursor() as cursor:
        with cursor.copy(sql, params) as copy:
            copy.set_types(["int4", "text", "text", "text", "text", "text"])
            for index, ref, row_status, data, output, error in copy.rows():
                yield (
                    index,
                    ref,
                    row_status,
                    loads(data) if data else [],
                    loads(output) if output else None,
                    error,
                )


class _Buffer:
    def __init__(self) -> None:
        self.parts: list[str] = []
        self.size = 0

    def write(self, text: str) -> int:
        self.parts.append(text)
        self.size += len(text)
        return len(text)

    def take(self) -> bytes:
        data = "".join(self.parts).encode("utf-8")
        self.parts, self.size = [], 0
        return data


class _CsvBuffer(_Buffer):
    """The file of a csv writer whose records end with LF, with every field holding CR or LF quoted.

    Python's csv quotes a field only for the characters of its line terminator: ending records
    with LF alone leaves a bare CR unquoted, and readers split the record there. So the writer
    ends records with CRLF and this turns each record's CRLF into LF (the writer writes a record
    at a time), the terminator PostgreSQL's COPY uses.
    """

    def write(self, text: str) -> int:
        if text.endswith("\r\n"):
            text = text[:-2] + "\n"
        return super().write(text)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return neutralise(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return neutralise(json.dumps(value, ensure_ascii=False))


# The first character's code point, compared as integers: `left(x, 1) IN (…)` built a new text
# value and compared strings for every cell, most of what the download cost PostgreSQL.
_FORMULA_CODES = ", ".join(str(ord(c)) for c in _FORMULA_START)


def _neutralise_sql(expr: str) -> str:
    """SQL twin of neutralise(): the same rule, evaluated by PostgreSQL while it writes the CSV."""
    return (
        f"CASE WHEN ascii({expr}) IN ({_FORMULA_CODES}) "
        f"AND {expr} !~ '^[+-]?([0-9]+(\\.[0-9]*)?|\\.[0-9]+)([eE][+-]?[0-9]+)?$' "
        f"THEN chr(39) || {expr} ELSE {expr} END"
    )


def _stream_csv_copy(
    job: Job, status: str, columns: list[str], outputs: list[str]
) -> Iterator[bytes]:
    """PostgreSQL writes the CSV itself (COPY … WITH (FORMAT csv)): no row passes through Python."""
    cells = [_neutralise_sql(f"(data->>{i})") for i in range(len(columns))]
    params: list[Any] = []
    for name in outputs:
        cell = _neutralise_sql("(output->>%s)")
        cells.append(cell)
        params.extend([name] * cell.count("%s"))  # the expression names the value several times
    cells.append("status")
    cells.append(_neutralise_sql("error"))
    where, where_params = _job_rows(job.pk, _status_values(status))
    sql = (
        f'COPY (SELECT {", ".join(cells)} FROM {where} ORDER BY "index") '
        f"TO STDOUT WITH (FORMAT csv)"
    )
    yield from _copy_out(sql, params + where_params)


def _copy_out(sql: str, params: list[Any]) -> Iterator[bytes]:
    """What COPY … TO STDOUT writes, in pieces of about BUFFER_BYTES."""
    connection.ensure_connection()
    pieces: list[bytes] = []
    size = 0
    with connection.wrap_database_errors, connection.connection.cursor() as cursor:
        with cursor.copy(sql, params) as copy:
            for data in copy:
                pieces.append(bytes(data))
                size += len(data)
                if size >= BUFFER_BYTES:
                    yield b"".join(pieces)
                    pieces, size = [], 0
    if pieces:
        yield b"".join(pieces)


def _json_text(expr: str) -> str:
    return f"coalesce(to_json({expr})::text, 'null')"


def _stream_jsonl_copy(job: Job, status: str, columns: list[str]) -> Iterator[bytes]:
    """PostgreSQL writes each row object's JSON line itself: no row passes through Python.

    The line is the text row_object() dumps to, byte for byte: the same keys in the same order,
    the same separators, strings escaped alike, values as jsonb prints them (which the Python
    path parses and prints again). COPY's csv format with a delimiter and a quote that JSON text
    never holds raw (PostgreSQL escapes every control character) writes the one column as is.
    """
    params: list[Any] = []
    parts = ["'{\"row\": '", '("index" + 1)::text', "', \"ref\": '", _json_text("ref")]
    parts += ["', \"status\": '", _json_text("status"), "', \"input\": {'"]
    for i, name in enumerate(columns):
        parts.append("%s")
        params.append(("" if i == 0 else ", ") + json.dumps(name, ensure_ascii=False) + ": ")
        parts.append(f"coalesce((data->{i})::text, 'null')")
    parts += ["'}, \"output\": '", "coalesce(output::text, 'null')"]
    parts += ["', \"error\": '", _json_text("error"), "'}'"]
    where, where_params = _job_rows(job.pk, _status_values(status))
    sql = (
        f'COPY (SELECT {" || ".join(parts)} FROM {where} ORDER BY "index") '
        f"TO STDOUT WITH (FORMAT csv, DELIMITER E'\\x02', QUOTE E'\\x01')"
    )
    yield from _copy_out(sql, params + where_params)


def _unique(name: str, prefix: str, taken: set[str]) -> str:
    """`name`, else `prefix` + name, else that with .2, .3, … until one is free."""
    candidate, n = name, 1
    while candidate in taken:
        candidate = f"{prefix}{name}" + (f".{n}" if n > 1 else "")
        n += 1
    taken.add(candidate)
    return candidate


def csv_header(columns: list[str], outputs: list[str]) -> list[str]:
    """Input columns, output columns, `_status`, `_error`, each name once: a script reading by
    name (csv.DictReader) would otherwise keep one of two same-named cells and drop the other."""
    taken = {"_status", "_error"}
    inputs = [_unique(name, "input.", taken) for name in columns]
    outs = [_unique(name, "output.", taken) for name in outputs]
    return [*inputs, *outs, "_status", "_error"]


def stream_csv(job: Job, status: str = "all") -> Iterator[bytes]:
    columns = list(job.columns or [])
    outputs = output_columns(job)
    buffer = _CsvBuffer()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([neutralise(c) for c in csv_header(columns, outputs)])
    if connection.vendor == "postgresql":
        yield buffer.take()
        yield from _stream_csv_copy(job, status, columns, outputs)
        return
    width = len(columns)
    for _index, _ref, row_status, data, output, error in iter_rows(job, status):
        cells = [_cell(v) for v in data[:width]]
        if len(cells) < width:
            cells.extend([""] * (width - len(cells)))
        if output:
            cells.extend(_cell(output.get(name)) for name in outputs)
        else:
            cells.extend([""] * len(outputs))
        cells.append(row_status)
        cells.append(neutralise(error) if error else "")
        writer.writerow(cells)
        if buffer.size >= BUFFER_BYTES:
            yield buffer.take()
    if buffer.size:
        yield buffer.take()


def row_object(
    columns: list[str], index: int, ref: str, status: str, data: list, output, error
) -> dict[str, Any]:
    return {
        "row": index + 1,
        "ref": ref,
        "status": status,
        "input": {c: (data[i] if i < len(data) else None) for i, c in enumerate(columns)},
        "output": output,
        "error": error,
    }


def row_page(
    job: Job, status: str, offset: int, limit: int
) -> list[tuple[int, str, str, list, dict | None, str | None]]:
    """Rows offset .. offset+limit-1 of the job (or of those with a status) in input order, as
    iter_rows gives them: the row listing's page.

    Rows are written once with unique indexes from 0 and `total` is their count, so when the last
    index is present the indexes are exactly 0..total-1 and a page of every row is a range of the
    (job, index) index, as fast at the end of a million rows as at the start (OFFSET walks past
    every earlier row).
    """
    rows = Row.objects.filter(job=job)
    fields = ("index", "ref", "status", "data", "output", "error")
    if status == "all" and job.total and rows.filter(index=job.total - 1).exists():
        window = rows.filter(index__gte=offset, index__lt=offset + limit)
        return list(window.order_by("index").values_list(*fields))
    if status != "all":
        rows = rows.filter(status=status)
    return list(rows.order_by("index").values_list(*fields)[offset : offset + limit])


def stream_jsonl(job: Job, status: str = "all") -> Iterator[bytes]:
    columns = list(job.columns or [])
    if connection.vendor == "postgresql":
        yield from _stream_jsonl_copy(job, status, columns)
        return
    buffer = _Buffer()
    dumps = json.JSONEncoder(ensure_ascii=False).encode
    for row in iter_rows(job, status):
        buffer.write(dumps(row_object(columns, *row)))
        buffer.write("\n")
        if buffer.size >= BUFFER_BYTES:
            yield buffer.take()
    if buffer.size:
        yield buffer.take()


def stream_json(job: Job, status: str = "all") -> Iterator[bytes]:
    columns = list(job.columns or [])
    buffer = _Buffer()
    dumps = json.JSONEncoder(ensure_ascii=False).encode
    if connection.vendor == "postgresql":
        yield from _json_array(_stream_jsonl_copy(job, status, columns))
        return
    buffer.write("[")
    first = True
    for row in iter_rows(job, status):
        buffer.write("\n" if first else ",\n")
        first = False
        buffer.write(dumps(row_object(columns, *row)))
        if buffer.size >= BUFFER_BYTES:
            yield buffer.take()
    buffer.write("\n]\n")
    yield buffer.take()


def _json_array(lines: Iterator[bytes]) -> Iterator[bytes]:
    """JSON lines (pieces ending at a line's end) as stream_json's array: `[`, the objects joined
    by `,` and a line break, `]`."""
    opened = False
    for piece in lines:
        text = piece.replace(b"\n", b",\n")
        # Each piece ends a line: its last ",\n" is held back as the one between it and the next.
        yield (b"[\n" + text[:-2]) if not opened else (b",\n" + text[:-2])
        opened = True
    yield b"\n]\n" if opened else b"[\n]\n"


STREAMS = {"csv": stream_csv, "jsonl": stream_jsonl, "json": stream_json}


def stream(job: Job, fmt: str = "csv", status: str = "all") -> Iterator[bytes]:
    return STREAMS[fmt](job, status)


def filename_for(job: Job, fmt: str, status: str = "all", *, ascii_only: bool = False) -> str:
    """The download's file name: the job's name in its own script (letters, digits, `.`, `-`
    kept, anything else `_`), or with `ascii_only` the fallback for clients that read no other
    (accents dropped, other scripts left out)."""
    stem = unicodedata.normalize("NFC", (job.name or job.public_id).rsplit(".", 1)[0])
    if ascii_only:
        stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    base = re.sub(r"[^\w.-]+", "_", stem)[:80]
    if ascii_only:
        base = base.strip("_")  # what stood for a left-out script
    base = base or job.public_id
    suffix = "" if status == "all" else f"-{status}"
    return f"{base}-results{suffix}.{fmt}"


def write_to(job: Job, fh: io.RawIOBase | Any, fmt: str = "csv", status: str = "all") -> int:
    written = 0
    for piece in stream(job, fmt, status):
        fh.write(piece)
        written += len(piece)
    return written
