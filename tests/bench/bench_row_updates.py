"""Benchmark (PostgreSQL): the row table's fill factor and failed-row index, against the ingest's
COPY and the sync point's UPDATE.

Run: `BENCH_DATABASE_URL=postgres://… python tests/bench/bench_row_updates.py [ROWS]
[FILLFACTORS] [LAYOUTS] [ROUNDS] [STATEMENTS]` (defaults 300000, "100,80,70,60,50,40", "error",
2, "run"). A statement names how each group reaches `write_rows`: `run` (in order, as a CPU group
finishes: the succeeded run's UPDATE) or `general` (the same rows in reverse order, which takes
the general batch UPDATE).
A layout names the failed rows' partial index on (job, index): `status` (WHERE status =
'failed', before migration 0005), `error` (WHERE error IS NOT NULL, since) or `none`.

For each round, layout and fill factor, in that order: the row table is emptied and set up, a
job's ROWS rows in bench_engine's shape (six text values) are written by COPY (timed: what the
ingest's COPY pays for the table), then every row is finished by `syncpoint.write_rows` in
groups of CPU_GROUP_MAX rows, each group its own transaction as at a sync point (timed: the
UPDATE), with the `template` processor's output. Then the CSV download of the job is timed
(twice: the first read after the updates also sets the rows' hint bits). One JSON line each:

    {"bench": "row_updates", "layout": …, "fillfactor": …, "copy_s": …, "update_s": …,
     "hot_share": …, "table_mb_after_copy": …, "table_mb_after_update": …, …}
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchenv  # noqa: E402

benchenv.setup("bench-row-updates-")

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from jobs import results, syncpoint  # noqa: E402
from jobs.chunk_loop import CPU_GROUP_MAX  # noqa: E402
from jobs.ingest import db as ingest_db  # noqa: E402
from jobs.models import Job, JobStatus, Row  # noqa: E402
from tests.bench.benchdata import COLUMNS, TEMPLATE  # noqa: E402

TABLE = Row._meta.db_table
LAYOUTS = {
    "status": "CREATE INDEX row_failed_idx ON {t} (job_id, \"index\") WHERE status = 'failed'",
    "error": 'CREATE INDEX row_error_idx ON {t} (job_id, "index") WHERE error IS NOT NULL',
    "none": None,
}


def sql(statement: str, params=None):
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return cursor.fetchall() if cursor.description else None


def values(n: int) -> list[list[str]]:
    rng = random.Random(8)
    cities = ["Zürich", "Lyon", "Oslo", "São Paulo", "Kraków", "Nairobi", "Kyoto", "Lima"]
    words = "fast slow great fine late early broken perfect cheap dear".split()
    return [
        [
            str(i + 1),
            f"Customer {i}",
            f"user{i}@example.com",
            cities[i % 8],
            f"{rng.random() * 100:.2f}",
            " ".join(rng.choice(words) for _ in range(4)),
        ]
        for i in range(n)
    ]


def stats() -> tuple[int, int, float]:
    """(updates, HOT updates, table MB) of the row table, this backend's counts flushed first."""
    sql("SELECT pg_stat_force_next_flush()")
    [(upd, hot, size)] = sql(
        "SELECT n_tup_upd, n_tup_hot_upd, pg_relation_size(relid) FROM pg_stat_user_tables "
        "WHERE relid = %s::regclass",
        [TABLE],
    )
    return upd, hot, size / 1e6


def one(job: Job, data: list[list[str]], layout: str, fillfactor: int, statement: str) -> dict:
    sql(f"TRUNCATE {TABLE}")
    sql("DROP INDEX IF EXISTS row_failed_idx; DROP INDEX IF EXISTS row_error_idx")
    if LAYOUTS[layout]:
        sql(LAYOUTS[layout].format(t=TABLE))
    sql(f"ALTER TABLE {TABLE} SET (fillfactor = {fillfactor})")
    sql("CHECKPOINT")
    # The ingest's own lines and statement, built before the clock starts: the COPY is timed.
    rows = ((i, str(i + 1), row) for i, row in enumerate(data))
    blocks = [block for block, _ in ingest_db._copy_blocks(job.pk, rows)]
    connection.ensure_connection()
    raw = connection.connection
    start = time.perf_counter()
    with raw.cursor() as cursor, cursor.copy(ingest_db.copy_statement(connection)) as copy:
        for block in blocks:
            copy.write(block)
    raw.commit()
    copy_s = time.perf_counter() - start
    upd0, hot0, mb_copy = stats()

    fmt = TEMPLATE.format_map
    update_s = 0.0
    for first in range(0, len(data), CPU_GROUP_MAX):
        done = [
            syncpoint.Done(
                i, "succeeded", {"text": fmt(dict(zip(COLUMNS, row, strict=True)))}, None, 1
            )
            for i, row in enumerate(data[first : first + CPU_GROUP_MAX], start=first)
        ]
        if statement == "general":
            done.reverse()
        start = time.perf_counter()
        with transaction.atomic():
            syncpoint.write_rows(job.pk, done)
        update_s += time.perf_counter() - start
    upd1, hot1, mb_update = stats()

    downloads = []
    for _ in range(2):
        start = time.perf_counter()
        size = sum(len(piece) for piece in results.stream(job, "csv"))
        downloads.append(time.perf_counter() - start)
    assert size > 0
    return {
        "bench": "row_updates",
        "layout": layout,
        "fillfactor": fillfactor,
        "statement": statement,
        "rows": len(data),
        "copy_s": round(copy_s, 3),
        "update_s": round(update_s, 3),
        "update_us_per_row": round(update_s / len(data) * 1e6, 2),
        "hot_share": round((hot1 - hot0) / max(1, upd1 - upd0), 4),
        "updates": upd1 - upd0,
        "table_mb_after_copy": round(mb_copy, 1),
        "table_mb_after_update": round(mb_update, 1),
        "download_s": [round(d, 3) for d in downloads],
    }


def main(
    rows: int, fillfactors: list[int], layouts: list[str], rounds: int, statements: list[str]
) -> None:
    from django.core.management import call_command

    if connection.vendor != "postgresql":
        print(json.dumps({"bench": "row_updates", "skipped": "needs PostgreSQL"}))
        return
    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user(f"bench{time.time_ns()}", password="x")
    job = Job.objects.create(
        owner=user,
        processor="template",
        params={"template": TEMPLATE},
        columns=COLUMNS,
        status=JobStatus.COMPLETED,
        total=rows,
        succeeded=rows,
    )
    data = values(rows)
    for round_ in range(rounds):
        for layout in layouts:
            for fillfactor in fillfactors:
                for statement in statements:
                    figures = one(job, data, layout, fillfactor, statement)
                    print(json.dumps({"round": round_ + 1, **figures}))
                    sys.stdout.flush()


if __name__ == "__main__":
    args = sys.argv[1:]
    main(
        int(args[0]) if args else 300_000,
        [int(f) for f in (args[1] if len(args) > 1 else "100,80,70,60,50,40").split(",")],
        (args[2] if len(args) > 2 else "error").split(","),
        int(args[3]) if len(args) > 3 else 2,
        (args[4] if len(args) > 4 else "run").split(","),
    )
