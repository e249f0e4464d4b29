"""Benchmark: ingest throughput and memory against a bare csv.reader loop over the same file.

Run: `python tests/bench/bench_ingest.py [ROWS]` (default 200,000). It writes a ROWS-row, 6-column
UTF-8 CSV in a temporary directory, then prints one JSON line per figure:

- `csv_reader`: rows/s of `for row in csv.reader(open(path, newline=""))`, the yardstick;
- `validate`: rows/s of `jobs.ingest.validate()` (detection, decoding, field counts, preview),
  without and with an id column (duplicate check), and the time ratio to the yardstick;
- `validate_memory`: peak RSS growth (ru_maxrss) over the validate runs, and tracemalloc's peak
  for one validate without and one with an id column (only the id digest set grows with rows);
- `write_rows_<vendor>`: rows/s of `write_rows()` into a throwaway database (wall time), and
  in the same run the yardstick of storing the same file in a plain 6-column table without index
  (PostgreSQL: its own `COPY … FROM STDIN (FORMAT csv)`; SQLite: `executemany` of csv.reader's
  rows in 5,000-row transactions), with the ratio (goal ≥ 0.5).

Throughput figures are the best of 3 runs in CPU time.
Set BENCH_DATABASE_URL to use another database you can throw away (e.g. PostgreSQL, for COPY).
"""

from __future__ import annotations

import csv
import json
import resource
import sys
import time
import tracemalloc
from pathlib import Path

from benchenv import setup  # noqa: E402  (sets up Django)

_tmp = setup("bench-ingest-")

from django.core.management import call_command  # noqa: E402
from django.db import connection, transaction  # noqa: E402

from jobs.ingest import validate, write_rows  # noqa: E402

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000


def emit(**figures) -> None:
    print(json.dumps({"bench": "ingest", "rows": ROWS, **figures}), flush=True)


def make_csv(path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "name", "email", "city", "score", "comment"])
        for i in range(ROWS):
            writer.writerow(
                [
                    f"cust-{i:07d}",
                    f"Customer {i}",
                    f"user{i}@example.com",
                    ("Zürich", "Lyon", "Oslo", "São Paulo")[i % 4],
                    str(i % 100),
                    f'Said "great, thanks" on order {i}' if i % 7 == 0 else "ok",
                ]
            )


def best_of(runs: int, fn) -> float:
    # CPU time, not wall time: the loops are single-threaded, and CPU time doesn't move with
    # whatever else the (2-core) machine is running.
    times = []
    for _ in range(runs):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def bare_reader(path: Path) -> None:
    with path.open(newline="", encoding="utf-8") as fh:
        for _row in csv.reader(fh):
            pass


def run_validate(path: Path, id_column: str | None) -> None:
    with path.open("rb") as fh:
        report = validate(fh, filename=path.name, id_column=id_column, max_rows=ROWS)
    assert report.valid and report.row_count == ROWS, report.errors[:3]


def max_rss_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main() -> None:
    path = _tmp / "input.csv"
    make_csv(path)
    size_mb = round(path.stat().st_size / 1e6, 1)

    bare = best_of(3, lambda: bare_reader(path))
    emit(figure="csv_reader", file_mb=size_mb, rows_per_s=round(ROWS / bare))

    rss_before = max_rss_kb()
    for id_column in (None, "id"):
        took = best_of(3, lambda c=id_column: run_validate(path, c))
        emit(
            figure="validate",
            id_column=id_column,
            rows_per_s=round(ROWS / took),
            seconds=round(took, 3),
            ratio_to_csv_reader=round(took / bare, 2),
        )
    rss_growth_mb = round((max_rss_kb() - rss_before) / 1024, 1)

    peaks = {}
    for id_column in (None, "id"):
        tracemalloc.start()
        run_validate(path, id_column)
        peaks[id_column] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    emit(
        figure="validate_memory",
        file_mb=size_mb,
        peak_rss_growth_mb=rss_growth_mb,
        tracemalloc_peak_mb=round(peaks[None] / 1e6, 2),
        tracemalloc_peak_mb_with_id_column=round(peaks["id"] / 1e6, 1),
    )

    # auth first: PostgreSQL checks the jobs tables' foreign keys as soon as syncdb makes them.
    call_command("migrate", "auth", verbosity=0)
    call_command("migrate", run_syncdb=True, verbosity=0)
    from django.contrib.auth import get_user_model

    from jobs.models import Job, Row

    owner = get_user_model().objects.create_user("bench-ingest")
    job = Job.objects.create(owner=owner, processor="template", id_column="id")
    start = time.perf_counter()
    with transaction.atomic(), path.open("rb") as fh:
        write_rows(job, fh, filename=path.name)
    took = time.perf_counter() - start
    assert Row.objects.filter(job=job).count() == ROWS
    plain = plain_table_baseline(path)
    emit(
        figure=f"write_rows_{connection.vendor}",
        rows_per_s=round(ROWS / took),
        seconds=round(took, 2),
        baseline="plain_table_copy" if connection.vendor == "postgresql" else "plain_executemany",
        baseline_rows_per_s=round(ROWS / plain),
        ratio=round(plain / took, 3),
        goal="ratio >= 0.5",
    )


def plain_table_baseline(path: Path) -> float:
    """Seconds to store the file's rows in a plain 6-column table without index or key."""
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bench_plain")
        cursor.execute(
            "CREATE TABLE bench_plain (id text, name text, email text, city text, score text, "
            "comment text)"
        )
    start = time.perf_counter()
    if connection.vendor == "postgresql":
        with transaction.atomic(), connection.cursor() as cursor, path.open("rb") as fh:
            with cursor.cursor.copy(
                "COPY bench_plain FROM STDIN WITH (FORMAT csv, HEADER true)"
            ) as copy:
                while block := fh.read(1 << 20):
                    copy.write(block)
    else:
        with path.open(newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh)
            next(reader)
            while batch := [row for _, row in zip(range(5000), reader, strict=False)]:
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.cursor.executemany(
                        "INSERT INTO bench_plain VALUES (?, ?, ?, ?, ?, ?)", batch
                    )
    took = time.perf_counter() - start
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE bench_plain")
    return took


if __name__ == "__main__":
    main()
