"""Benchmark (PostgreSQL): where the ingest's ceiling goes, the row table's layout by layout.

The ingest goal compares the ingest with PostgreSQL's own `COPY FROM` of the file into a plain
table (bench_engine's baseline), and the ingest runs at what PostgreSQL alone takes to store the
rows in the row table (bench_engine's `ingest_table_floor`). This takes that floor apart: the same
BENCH_ROWS rows (bench_engine's file, six values a row), already in COPY's format so no Python is
timed, are copied into tables that differ in one thing each from the row table:

- `row_table`: a copy of `jobs_row` as migrated (`data jsonb`, the `(job, index)` key and the
  failed rows' partial index): the floor itself;
- `data_text`: `data` stored as the JSON text it arrives as, not parsed into `jsonb`;
- `data_array_binary`: `data text[]`, sent in COPY's binary format (each value as its bytes, so
  PostgreSQL parses neither JSON nor an array literal);
- each of the three `…_key_after`: no index during the COPY, the key (and the partial index)
  built after it, as a table of one job's rows could be (the two figures and their sum).

Each variant is timed ROUNDS times (default 3), the variants interleaved within a round, each
COPY on an emptied table after a checkpoint. Then the download's side of the same layouts: a
`COPY … TO` of every row's six cells out of `data` (`->>` on `jsonb`, the text cast to `jsonb`
once a row, an array's elements), as results._stream_csv_copy takes them from `jsonb`.

One JSON line a variant: rows/s at the median round, the plain table's `COPY FROM` in the same
rounds as the baseline, and the median of the rounds' ratios (the ingest goal's yardstick:
≥ 0.5).

Run: `BENCH_DATABASE_URL=postgres://… python tests/bench/bench_row_table_copy.py`
(scripts/bench.sh does); BENCH_ROWS (default 1,000,000), BENCH_COPY_ROUNDS (3).
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchenv  # noqa: E402

TMP = benchenv.setup("bench-row-table-copy-")

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from jobs.ingest import db as ingest_db  # noqa: E402
from jobs.models import Row  # noqa: E402
from tests.bench.benchdata import COLUMNS, make_csv  # noqa: E402

ROWS = int(os.environ.get("BENCH_ROWS") or 1_000_000)
ROUNDS = int(os.environ.get("BENCH_COPY_ROUNDS") or 3)
BLOCK = 1 << 20
ROW_COLUMNS = ingest_db._table_and_columns(connection)[1]  # the ingest's COPY columns
KEY = 'ALTER TABLE {t} ADD PRIMARY KEY (job_id, "index")'
FAILED = "CREATE INDEX {t}_failed ON {t} (job_id, \"index\") WHERE status = 'failed'"
# name: (data's type, COPY format, key during the COPY)
VARIANTS = {
    "row_table": ("jsonb", "text", True),
    "row_table_key_after": ("jsonb", "text", False),
    "data_text": ("text", "text", True),
    "data_text_key_after": ("text", "text", False),
    "data_array_binary": ("text[]", "binary", True),
    "data_array_binary_key_after": ("text[]", "binary", False),
}
# How the download takes cell i (0-based) out of `data` read as `d`, by its type; text is
# parsed once a row (in a subquery PostgreSQL does not fold into the cells' expressions).
CELL = {
    "jsonb": ("data", "d->>{i}"),
    "text": ("data::jsonb", "d->>{i}"),
    "text[]": ("data", "d[{n}]"),
}


def sql(statement: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement)


def copy_in(statement: str, payload: bytes) -> float:
    """Seconds for `statement` (a COPY FROM STDIN) to take `payload`, committed."""
    raw = connection.connection
    start = time.perf_counter()
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for at in range(0, len(payload), BLOCK):
            copy.write(payload[at : at + BLOCK])
    raw.commit()
    return time.perf_counter() - start


def copy_out(statement: str) -> float:
    raw = connection.connection
    start = time.perf_counter()
    size = 0
    with raw.cursor() as cursor, cursor.copy(statement) as copy:
        for block in copy:
            size += len(block)
    raw.commit()
    assert size > 0
    return time.perf_counter() - start


def row_lines(csv_path: Path) -> bytes:
    """The rows as the ingest sends them: its own COPY text lines (job 1)."""
    with csv_path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        next(reader)
        rows = ((i, str(i + 1), row) for i, row in enumerate(reader))
        return b"".join(block for block, _ in ingest_db._copy_blocks(1, rows))


def binary_rows(jsonb_table: str) -> bytes:
    """The rows of `jsonb_table` in COPY's binary format with `data` a text[] (made by
    PostgreSQL, so no Python builds them)."""
    raw = connection.connection
    out = bytearray()
    query = (
        f'COPY (SELECT job_id, "index", ref, ARRAY(SELECT jsonb_array_elements_text(data)), '
        f'status, attempts FROM {jsonb_table} ORDER BY "index") TO STDOUT (FORMAT binary)'
    )
    with raw.cursor() as cursor, cursor.copy(query) as copy:
        for block in copy:
            out += block
    raw.commit()
    return bytes(out)


def create(name: str, data_type: str) -> str:
    """An empty table with the row table's columns and checks, `data` of `data_type`."""
    table = f"bench_{name}"
    sql(f"DROP TABLE IF EXISTS {table}")
    like = f"LIKE {Row._meta.db_table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
    sql(f"CREATE TABLE {table} ({like})")
    if data_type != "jsonb":
        sql(f"ALTER TABLE {table} ALTER data TYPE {data_type} USING NULL")
    return table


def add_indexes(table: str) -> None:
    sql(KEY.format(t=table))
    sql(FAILED.format(t=table))


def drop_indexes(table: str) -> None:
    sql(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {table}_pkey")
    sql(f"DROP INDEX IF EXISTS {table}_failed")


def _rounded(seconds: list[float]) -> list[float]:
    return [round(t, 2) for t in seconds]


def emit(bench: str, took: list[float], base: list[float], baseline: str, **extra) -> None:
    """One figure's line: rows/s at the median round against the baseline's, and the median of
    the rounds' ratios (each round against its own baseline: the machine's mood moves whole
    rounds)."""
    ratios = [b / t for b, t in zip(base, took, strict=True)]
    line = {
        "bench": bench,
        "value": round(ROWS / statistics.median(took)),
        "unit": "rows/s",
        "baseline": baseline,
        "baseline_value": round(ROWS / statistics.median(base)),
        "ratio": round(statistics.median(ratios), 3),
        "ratios": [round(r, 3) for r in ratios],
        "rows": ROWS,
        **extra,
        "seconds": _rounded(took),
        "baseline_seconds": _rounded(base),
    }
    print(json.dumps(line))
    sys.stdout.flush()


def main() -> None:
    if connection.vendor != "postgresql":
        print(json.dumps({"bench": "row_table_copy", "skipped": "needs PostgreSQL"}))
        return
    call_command("migrate", verbosity=0)
    connection.ensure_connection()
    csv_path = TMP / "input.csv"
    make_csv(csv_path, ROWS)
    csv_bytes = csv_path.read_bytes()
    text_payload = row_lines(csv_path)

    sql("DROP TABLE IF EXISTS bench_plain")
    sql(
        "CREATE TABLE bench_plain "
        "(id bigint, name text, email text, city text, score numeric, comment text)"
    )
    tables = {name: create(name, data_type) for name, (data_type, _, _) in VARIANTS.items()}
    copy_in(f"COPY {tables['row_table']} ({ROW_COLUMNS}) FROM STDIN", text_payload)
    binary_payload = binary_rows(tables["row_table"])

    plain_s: list[float] = []
    copy_s: dict[str, list[float]] = {name: [] for name in VARIANTS}
    key_s: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(ROUNDS):
        sql("TRUNCATE bench_plain")
        sql("CHECKPOINT")
        plain_s.append(
            copy_in("COPY bench_plain FROM STDIN WITH (FORMAT csv, HEADER true)", csv_bytes)
        )
        for name, (_, fmt, key_during) in VARIANTS.items():
            table = tables[name]
            sql(f"TRUNCATE {table}")
            drop_indexes(table)
            if key_during:
                add_indexes(table)
            sql("CHECKPOINT")
            payload = binary_payload if fmt == "binary" else text_payload
            copy_s[name].append(
                copy_in(f"COPY {table} ({ROW_COLUMNS}) FROM STDIN (FORMAT {fmt})", payload)
            )
            if not key_during:
                start = time.perf_counter()
                add_indexes(table)
                connection.connection.commit()
                key_s[name].append(time.perf_counter() - start)

    for name, (data_type, fmt, key_during) in VARIANTS.items():
        took = [c + k for c, k in zip(copy_s[name], key_s[name] or [0.0] * ROUNDS, strict=True)]
        extra = {}
        if not key_during:
            extra = {"copy_seconds": _rounded(copy_s[name]), "key_seconds": _rounded(key_s[name])}
        emit(
            f"row_table_copy_{name}",
            took,
            plain_s,
            "postgres_copy_from into a plain table (bench_engine's), same rounds",
            data_type=data_type,
            copy_format=fmt,
            key="during the COPY" if key_during else "built after it",
            **extra,
        )

    # The download's side: every row's cells out of `data`, for each type (keyed tables).
    plain_out = []
    cells_out: dict[str, list[float]] = {t: [] for t in CELL}
    keyed = {"jsonb": "row_table", "text": "data_text", "text[]": "data_array_binary"}
    for _ in range(ROUNDS):
        plain_out.append(copy_out("COPY bench_plain TO STDOUT (FORMAT csv)"))
        for data_type, name in keyed.items():
            read, cell = CELL[data_type]
            cells = ", ".join(cell.format(i=i, n=i + 1) for i in range(len(COLUMNS)))
            rows = (
                f'SELECT "index", {read} AS d FROM {tables[name]} WHERE job_id = 1 '
                f'ORDER BY "index" OFFSET 0'
            )
            cells_out[data_type].append(
                copy_out(f'COPY (SELECT "index", {cells} FROM ({rows}) r) TO STDOUT (FORMAT csv)')
            )
    for data_type, took in cells_out.items():
        emit(
            f"row_table_cells_out_{keyed[data_type]}",
            took,
            plain_out,
            "COPY TO of the plain table, same rounds",
            data_type=data_type,
        )
    for table in [*tables.values(), "bench_plain"]:
        sql(f"DROP TABLE IF EXISTS {table}")


if __name__ == "__main__":
    main()
