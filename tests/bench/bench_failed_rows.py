"""Benchmark (PostgreSQL): what the lookups of a job's failed rows cost with each partial index.

Run: `BENCH_DATABASE_URL=postgres://… python tests/bench/bench_failed_rows.py [ROWS] [FAILED]
[LAYOUTS]` (defaults 1000000, 1000, "status,error,none"). A finished job of ROWS rows of which
FAILED, spread evenly, failed; for each layout of the failed rows' index on (job, index)
(`status`: WHERE status = 'failed', before migration 0005; `error`: WHERE error IS NOT NULL,
since; `none`), the median of 5 runs of each lookup as this tree issues it:

- `reasons`: the job page's failure reasons (`failures.reasons`);
- `preview`: the job page's "failed only" preview, its first 50 failed rows (reloaded while a
  running job has fewer);
- `download`: the failed-rows CSV download (`results.stream(job, "csv", "failed")`);
- `listing`: the API's row listing with `?status=failed`, its first page;
- `retry`: `services.retry` of every failed row, rolled back.
"""

from __future__ import annotations

import io
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchenv  # noqa: E402

benchenv.setup("bench-failed-rows-")

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from jobs import failures, preview, results, services  # noqa: E402
from jobs.models import Job, JobStatus, Row  # noqa: E402

TABLE = Row._meta.db_table
LAYOUTS = {
    "status": "CREATE INDEX row_failed_idx ON {t} (job_id, \"index\") WHERE status = 'failed'",
    "error": 'CREATE INDEX row_error_idx ON {t} (job_id, "index") WHERE error IS NOT NULL',
    "none": None,
}


class _RollBack(Exception):
    pass


def sql(statement: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement)


def median_ms(fn, times: int = 5) -> float:
    spent = []
    for _ in range(times):
        start = time.perf_counter()
        fn()
        spent.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(spent), 2)


def make_job(rows: int, failed: int) -> Job:
    user = get_user_model().objects.create_user(f"bench{time.time_ns()}", password="x")
    job = Job.objects.create(
        owner=user,
        processor="template",
        params={"template": "{name}!"},
        columns=["name"],
        status=JobStatus.PARTIAL,
        total=rows,
        succeeded=rows - failed,
        failed=failed,
    )
    every = max(1, rows // max(1, failed))
    buf = io.StringIO()
    for i in range(rows):
        if i % every == every - 1 and (i // every) < failed:
            state = "failed\t\\N\tThe service answered 503\t3"
        else:
            state = f'succeeded\t{{"text": "n{i}!"}}\t\\N\t1'
        buf.write(f'{job.pk}\t{i}\t{i + 1}\t["n{i}"]\t{state}\n')
    with connection.cursor() as cursor:
        columns = 'job_id, "index", ref, data, status, output, error, attempts'
        with cursor.copy(f"COPY {TABLE} ({columns}) FROM STDIN") as copy:
            copy.write(buf.getvalue())
    sql(f"VACUUM ANALYZE {TABLE}")
    return job


def retry(job: Job) -> None:
    try:
        with transaction.atomic():
            services.retry(job, actor="bench")
            raise _RollBack
    except _RollBack:
        pass


def main(rows: int, failed: int, layouts: list[str]) -> None:
    from django.core.management import call_command

    if connection.vendor != "postgresql":
        print(json.dumps({"bench": "failed_rows", "skipped": "needs PostgreSQL"}))
        return
    call_command("migrate", verbosity=0)
    job = make_job(rows, failed)
    assert len(list(results.iter_rows(job, "failed"))) == failed
    for layout in layouts:
        sql("DROP INDEX IF EXISTS row_failed_idx; DROP INDEX IF EXISTS row_error_idx")
        if LAYOUTS[layout]:
            sql(LAYOUTS[layout].format(t=TABLE))
        sql(f"ANALYZE {TABLE}")
        line = {
            "bench": "failed_rows",
            "layout": layout,
            "rows": rows,
            "failed": failed,
            "reasons_ms": median_ms(lambda: failures.reasons(job)),
            "preview_ms": median_ms(lambda: preview.first_rows(job, "failed")),
            "download_ms": median_ms(
                lambda: sum(len(p) for p in results.stream(job, "csv", "failed"))
            ),
            "listing_ms": median_ms(lambda: results.row_page(job, "failed", 0, 100)),
            "retry_ms": median_ms(lambda: retry(job)),
        }
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(
        int(args[0]) if args else 1_000_000,
        int(args[1]) if len(args) > 1 else 1000,
        (args[2] if len(args) > 2 else "status,error,none").split(","),
    )
