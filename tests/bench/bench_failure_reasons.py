"""Benchmark: the job page's "why rows failed" table (jobs.failures.reasons) on a big job.

Run: `BENCH_DATABASE_URL=postgres://… python tests/bench/bench_failure_reasons.py [ROWS]`
(default 200,000 rows, half of them failed with one of 8 reasons, each error its own). The
count runs when the job page is loaded and when the job changes state, never on a poll, and
once per state of the job (the cache keeps it); measured here is the count itself. The baseline
is the page's one-query job read (services.get_job), which every poll makes. Prints one JSON
line:

    {"bench": "failure_reasons", "rows": …, "failed": …, "reasons_ms": …, "get_job_ms": …,
     "ratio": …, "database": …}
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchenv  # noqa: E402

benchenv.setup("bench-failure-reasons-")

from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402

from jobs import failures, services  # noqa: E402
from jobs.models import Job, JobStatus, Row, RowStatus  # noqa: E402

REASONS = 8


def _median_ms(fn, times: int) -> float:
    spent = []
    for _ in range(times):
        started = time.perf_counter()
        fn()
        spent.append((time.perf_counter() - started) * 1000)
    return statistics.median(spent)


def main(rows: int) -> None:
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user(f"bench{time.time_ns()}", password="x")
    failed = rows // 2
    job = Job.objects.create(
        owner=user,
        processor="template",
        status=JobStatus.PARTIAL,
        total=rows,
        succeeded=rows - failed,
        failed=failed,
        columns=["name"],
    )
    batch = []
    for i in range(rows):
        bad = i % 2 == 1
        batch.append(
            Row(
                job=job,
                index=i,
                ref=str(i + 1),
                data=[f"n{i}"],
                status=RowStatus.FAILED if bad else RowStatus.SUCCEEDED,
                output=None if bad else {"text": f"n{i}!"},
                error=f"The service answered 5{(i // 2) % REASONS:02d}: id {i}" if bad else None,
                reason=f"The service answered 5{(i // 2) % REASONS:02d}" if bad else None,
            )
        )
        if len(batch) == 10_000:
            Row.objects.bulk_create(batch)
            batch = []
    Row.objects.bulk_create(batch)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {Row._meta.db_table}")

    found, other = failures.reasons(job)
    assert sum(r.rows for r in found) + other == failed and len(found) == REASONS
    # The count itself: failures.reasons answers a job's same state from the cache.
    reasons_ms = _median_ms(lambda: failures.count(job, failures.MAX_REASONS), 7)
    get_job_ms = _median_ms(lambda: services.get_job(user, job.public_id, last_event=True), 50)
    print(
        json.dumps(
            {
                "bench": "failure_reasons",
                "rows": rows,
                "failed": failed,
                "reasons_ms": round(reasons_ms, 2),
                "get_job_ms": round(get_job_ms, 3),
                "ratio": round(reasons_ms / get_job_ms, 1),
                "database": connection.vendor,
            }
        )
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200_000)
