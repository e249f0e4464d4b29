"""Benchmark: the job engine end to end on PostgreSQL + Redis with real worker processes.

Run through `make bench` (or `BENCH_ROWS=200000 bash scripts/bench.sh`), or by hand with
DATABASE_URL (PostgreSQL, a role that may create databases) and CELERY_BROKER_URL (Redis) set.
Without them it prints a "skipped" line and exits 0.

It creates (and drops first) its own database `bench_batchhub` on the same server, a user, and a
BENCH_ROWS-row CSV (default 1,000,000; 6 columns of mixed text and numbers, ~100 bytes a row).
Each figure is one JSON line: value, baseline measured in the same run, ratio, goal.

1. ingest: `loading.ingest()` rows/s against PostgreSQL's `COPY FROM` of the same file into a
   plain 6-column table; create_job's validation pass is reported beside it.
2. processing (template, 2 worker processes): rows/s from "ingest done" to "job completed",
   against a bare csv.reader → str.format_map → csv.writer loop, and against a naive
   one-Celery-task-per-row design (tests/bench/naive_tasks.py, loaded by the same worker with
   --include) on BENCH_NAIVE_ROWS rows (default 2,000).
3. download: `results.stream(job, "csv")` in-process against `COPY (SELECT …) TO STDOUT` of the
   same rows, and this process's peak RSS growth while streaming.
4. status read (in-process, no HTTP): p50/p99 of Job.objects.get + job_representation for the
   big job and a 1,000-row job.
5. worker CPU: user + system CPU seconds of the worker's processes per processed row.
6. worker memory: peak RSS (VmHWM) of the worker's main process plus pool children.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

ROWS = int(os.environ.get("BENCH_ROWS") or 1_000_000)
NAIVE_ROWS = int(os.environ.get("BENCH_NAIVE_ROWS") or 2_000)
SMALL_ROWS = 1_000
STATUS_READS = int(os.environ.get("BENCH_STATUS_READS") or 500)
BENCH_DB = "bench_batchhub"


def emit(
    bench: str,
    value: float,
    unit: str,
    baseline: str | None,
    baseline_value: float | None,
    goal: str,
    **extra: Any,
) -> None:
    ratio = round(value / baseline_value, 4) if baseline_value else None
    line = {
        "bench": bench,
        "value": round(value, 3),
        "unit": unit,
        "baseline": baseline,
        "baseline_value": None if baseline_value is None else round(baseline_value, 3),
        "ratio": ratio,
        "goal": goal,
        "rows": ROWS,
        **extra,
    }
    print(json.dumps(line), flush=True)


def skip(reason: str) -> None:
    print(json.dumps({"bench": "engine", "skipped": reason}), flush=True)
    sys.exit(0)


SERVER_URL = os.environ.get("DATABASE_URL", "")
BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
if not SERVER_URL.startswith(("postgres://", "postgresql://")):
    skip("needs DATABASE_URL pointing at PostgreSQL (scripts/bench.sh starts one)")
if not BROKER_URL.startswith("redis://"):
    skip("needs CELERY_BROKER_URL pointing at Redis (scripts/bench.sh starts one)")


def with_dbname(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + name))


def recreate_database() -> None:
    import psycopg

    with psycopg.connect(with_dbname(SERVER_URL, "postgres"), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {BENCH_DB}")


recreate_database()
TMP = tempfile.TemporaryDirectory(prefix="bench-engine-")
BENCH_URL = with_dbname(SERVER_URL, BENCH_DB)
os.environ["DATABASE_URL"] = BENCH_URL
# Web side (this process) and workers share uploads and the generated secret key through it.
os.environ["BATCHHUB_DATA_DIR"] = str(Path(TMP.name) / "data")
os.environ.setdefault("BATCHHUB_MAX_ROWS", str(max(ROWS, 1_000_000)))
os.environ.setdefault("BATCHHUB_MAX_UPLOAD_BYTES", str(1 << 30))
os.environ["DJANGO_SETTINGS_MODULE"] = "batchhub.settings"

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.files import File  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from jobs import chunks, creation, enqueue, results  # noqa: E402
from jobs.ingest import loading  # noqa: E402
from jobs.models import TERMINAL, Job, JobStatus, Row, RowStatus  # noqa: E402
from jobs.representation import job_representation  # noqa: E402
from tests.bench.benchdata import COLUMNS, TEMPLATE, bare_loop, make_csv  # noqa: E402
from tests.support.worker import Worker, cpu_seconds  # noqa: E402

# --- input ---------------------------------------------------------------------------------------


# --- helpers -------------------------------------------------------------------------------------


def create(user, path: Path, name: str) -> Job:
    with path.open("rb") as fh:
        job, _ = creation.create_job(
            user,
            processor="template",
            params={"template": TEMPLATE},
            source=creation.Source(upload=File(fh, name=name)),
            concurrency=2,
            actor="bench",
        )
    return job


def wait_terminal(job_pk: int, timeout: float, worker: Worker) -> Job:
    def terminal():
        job = Job.objects.get(pk=job_pk)
        return job if job.status in TERMINAL else None

    return worker.wait_for(terminal, timeout, message=f"job {job_pk} to finish")


def copy_from_baseline(path: Path) -> float:
    """Seconds for PostgreSQL's own COPY FROM of the file into an equivalent plain table."""
    with connection.cursor() as cursor:
        cursor.execute(
            "DROP TABLE IF EXISTS bench_copy; CREATE TABLE bench_copy "
            "(id bigint, name text, email text, city text, score numeric, comment text)"
        )
    connection.ensure_connection()
    raw = connection.connection
    start = time.perf_counter()
    with raw.cursor() as cursor, path.open("rb") as fh:
        with cursor.copy("COPY bench_copy FROM STDIN WITH (FORMAT csv, HEADER true)") as copy:
            while block := fh.read(1 << 20):
                copy.write(block)
    raw.commit()
    took = time.perf_counter() - start
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM bench_copy")
        assert cursor.fetchone()[0] == ROWS
        cursor.execute("DROP TABLE bench_copy")
    return took


def copy_into_rows_floor(job: Job) -> float:
    """Seconds for PostgreSQL alone to COPY this job's rows, already in COPY's text format, into
    the row table again (under an unused job id, rolled back): no Python parsing or encoding,
    only what storing them costs there (the row table's key and WAL). The ingest cannot beat it."""
    path = Path(TMP.name) / "rows.copy"
    columns = 'job_id, "index", ref, data, status, attempts'
    connection.ensure_connection()
    raw = connection.connection
    with raw.cursor() as cursor, path.open("wb") as fh:
        query = (
            'COPY (SELECT %s::bigint, "index", ref, data, status, attempts FROM jobs_row '
            'WHERE job_id = %s ORDER BY "index") TO STDOUT'
        )
        with cursor.copy(query, [-job.pk, job.pk]) as copy:
            for block in copy:
                fh.write(block)
    raw.commit()
    start = time.perf_counter()
    with raw.cursor() as cursor, path.open("rb") as fh:
        with cursor.copy(f"COPY jobs_row ({columns}) FROM STDIN") as copy:
            while block := fh.read(1 << 20):
                copy.write(block)
        took = time.perf_counter() - start
    raw.rollback()
    path.unlink()
    return took


def reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def vm(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def copy_to_baseline(job: Job) -> tuple[float, int]:
    """Seconds and bytes of PostgreSQL's own COPY … TO of the job's rows, as CSV.

    Read twice, timed the second time: the first read after the job's last writes also sets
    every row's hint bits (a write of the whole table), which whoever reads first pays and
    which would otherwise flatter the download timed after it."""
    table = Row._meta.db_table
    sql = (
        f'COPY (SELECT "index", ref, status, data::text, output::text, error FROM {table} '
        f'WHERE job_id = %s ORDER BY "index") TO STDOUT WITH (FORMAT csv)'
    )
    connection.ensure_connection()
    for _ in range(2):
        size = 0
        start = time.perf_counter()
        with connection.connection.cursor() as cursor:
            with cursor.copy(sql, [job.pk]) as copy:
                for block in copy:
                    size += len(block)
        took = time.perf_counter() - start
    return took, size


def row_table() -> dict[str, Any]:
    """The row table's size, fill factor and update counts (all jobs' rows together)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_relation_size(c.oid), c.reloptions, s.n_tup_upd, s.n_tup_hot_upd, "
            "s.n_dead_tup FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid "
            "WHERE c.oid = %s::regclass",
            [Row._meta.db_table],
        )
        size, options, updates, hot, dead = cursor.fetchone()
    return {"mb": size / 1e6, "options": options, "updates": updates, "hot": hot, "dead": dead}


def row_updates_since(before: dict[str, Any], at_least: int) -> dict[str, Any]:
    """The row table once the worker's backends have reported `at_least` more updates.

    A backend reports its counts when it goes idle, within seconds, not at each commit."""
    deadline = time.monotonic() + 20
    last = row_table()
    while time.monotonic() < deadline:
        time.sleep(1)
        now = row_table()
        if now["updates"] - before["updates"] >= at_least and now["updates"] == last["updates"]:
            return now
        last = now
    return last


def worker_cpu(worker: Worker) -> float:
    """CPU seconds of the worker's main process and its pool processes, reaped ones included."""
    return cpu_seconds([worker.proc.pid, *worker.children()], reaped=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def status_read_ms(job_pk: int) -> float:
    start = time.perf_counter()
    job = Job.objects.get(pk=job_pk)
    json.dumps(job_representation(job), default=str)
    return (time.perf_counter() - start) * 1000


def status_reads(big_pk: int, small_pk: int, n: int) -> tuple[list[float], list[float]]:
    """n reads of each job, interleaved (which goes first alternates): the background work
    that follows a 1M-row job (autovacuum, checkpoints) then weighs on both alike."""
    big, small = [], []
    for i in range(n):
        if i % 2:
            small.append(status_read_ms(small_pk))
            big.append(status_read_ms(big_pk))
        else:
            big.append(status_read_ms(big_pk))
            small.append(status_read_ms(small_pk))
    return big, small


# --- the run -------------------------------------------------------------------------------------


def main() -> None:
    # Apps with migrations first (auth's user table), then tables of apps without migrations yet.
    call_command("migrate", verbosity=0)
    call_command("migrate", run_syncdb=True, verbosity=0)
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(
        "bench-engine", "bench@example.com", "bench-engine-password"
    )
    tmp = Path(TMP.name)
    big_csv, small_csv, naive_csv = tmp / "big.csv", tmp / "small.csv", tmp / "naive.csv"
    make_csv(big_csv, ROWS)
    make_csv(small_csv, SMALL_ROWS)
    make_csv(naive_csv, NAIVE_ROWS)
    file_mb = round(big_csv.stat().st_size / 1e6, 1)

    # Ingest runs in this process where it can be timed alone: the ingest task create_job would
    # send, and the worker loops ingest would start, are held back and started by hand.
    enqueue.start_ingest = lambda job_pk: None
    real_start_loops = chunks.start_loops
    chunks.start_loops = lambda job: None

    # 1. ingest
    copy_s = copy_from_baseline(big_csv)
    start = time.perf_counter()
    job = create(user, big_csv, "big.csv")
    validate_s = time.perf_counter() - start
    start = time.perf_counter()
    loading.ingest(job.pk)
    ingest_s = time.perf_counter() - start
    job.refresh_from_db()
    assert job.status == JobStatus.PROCESSING and job.total == ROWS, (
        job.status,
        job.total,
        job.error_message if hasattr(job, "error_message") else "",
    )
    emit(
        "ingest", ROWS / ingest_s, "rows/s", "postgres_copy_from", ROWS / copy_s, "ratio >= 0.5",
        file_mb=file_mb, seconds=round(ingest_s, 2),
    )
    emit(
        "ingest_validate", ROWS / validate_s, "rows/s", "postgres_copy_from", ROWS / copy_s,
        "none (create_job's validation pass, before the upload is accepted)",
        seconds=round(validate_s, 2),
    )
    ingested = row_table()
    floor_s = copy_into_rows_floor(job)
    emit(
        "ingest_table_floor", ROWS / floor_s, "rows/s", "postgres_copy_from", ROWS / copy_s,
        "none (what PostgreSQL alone needs to store these rows in BatchHub's row table: "
        "the ingest's ceiling)",
        seconds=round(floor_s, 2), ingest_ratio_to_floor=round(floor_s / ingest_s, 3),
    )

    small = create(user, small_csv, "small.csv")
    loading.ingest(small.pk)
    naive = create(user, naive_csv, "naive.csv")
    loading.ingest(naive.pk)

    # 2. processing with 2 worker processes
    bare_s = bare_loop(big_csv, tmp / "bare-out.csv")
    # The naive per-row task is loaded into the same worker, for the baseline.
    worker = Worker(
        tmp, concurrency=2, name="bench", extra_args=("--include=tests.bench.naive_tasks",)
    )
    try:
        cpu_before = worker_cpu(worker)
        rows_before = row_table()
        start = time.perf_counter()
        real_start_loops(job)
        job = wait_terminal(job.pk, timeout=max(600, ROWS / 200), worker=worker)
        process_s = time.perf_counter() - start
        worker_cpu_s = worker_cpu(worker) - cpu_before
        assert job.status == JobStatus.COMPLETED and job.succeeded == ROWS, (
            job.status,
            job.succeeded,
            job.failed,
        )
        peak = worker.peak_rss_mb()
        rows_after = row_updates_since(rows_before, ROWS)

        real_start_loops(small)
        wait_terminal(small.pk, timeout=300, worker=worker)

        # The naive design: one task per row through the same broker and worker.
        pks = list(Row.objects.filter(job=naive).order_by("index").values_list("pk", flat=True))
        from batchhub.celery import app

        start = time.perf_counter()
        for pk in pks:
            app.send_task(
                "bench.naive_row",
                args=[pk, COLUMNS, TEMPLATE],
                queue=settings.CELERY_TASK_DEFAULT_QUEUE,
            )
        deadline = time.monotonic() + 600
        while Row.objects.filter(job=naive, status=RowStatus.SUCCEEDED).count() < len(pks):
            if time.monotonic() > deadline or worker.proc.poll() is not None:
                raise RuntimeError(f"naive tasks did not finish: {worker.tail()}")
            time.sleep(0.05)
        naive_s = time.perf_counter() - start
    finally:
        worker.stop()

    engine_rps = ROWS / process_s
    emit(
        "processing_template", engine_rps, "rows/s", "bare_python_loop", ROWS / bare_s,
        "ratio >= 0.5", workers=2, seconds=round(process_s, 2),
    )
    emit(
        "processing_worker_cpu", worker_cpu_s / ROWS * 1e6, "us/row", None, None,
        "none (user + system CPU of the worker's processes per row, the job's run only)",
        workers=2, cpu_seconds=round(worker_cpu_s, 2),
    )
    emit(
        "processing_vs_naive", engine_rps, "rows/s", "one_celery_task_per_row",
        NAIVE_ROWS / naive_s, "ratio >= 50", naive_rows=NAIVE_ROWS,
    )
    updates = rows_after["updates"] - rows_before["updates"]
    hot = rows_after["hot"] - rows_before["hot"]
    emit(
        "processing_hot_updates", hot / updates if updates else 0.0, "share", None, None,
        "none (share of the row table's updates during the job that were HOT: rewritten in "
        "place, no new key entry)",
        updates=updates, hot_updates=hot, dead_rows=rows_after["dead"],
        table_mb_after_ingest=round(ingested["mb"], 1),
        table_mb_growth_processing=round(rows_after["mb"] - rows_before["mb"], 1),
        table_options=ingested["options"],
    )
    total_mb = peak["main"] + sum(peak["children"])
    emit(
        "worker_peak_rss", total_mb, "MB", None, None, "each process < 150 MB",
        main_mb=round(peak["main"], 1), children_mb=[round(c, 1) for c in peak["children"]],
        largest_process_mb=round(max([peak["main"], *peak["children"]]), 1),
    )

    # 3. download
    copy_to_s, copy_bytes = copy_to_baseline(job)
    exact = reset_peak_rss()
    rss_before = vm("VmRSS") if exact else vm("VmHWM")
    size = 0
    start = time.perf_counter()
    for piece in results.stream(job, "csv"):
        size += len(piece)
    download_s = time.perf_counter() - start
    growth = vm("VmHWM") - rss_before
    emit(
        "download_csv", ROWS / download_s, "rows/s", "postgres_copy_to_stdout", ROWS / copy_to_s,
        "ratio >= 0.75", mb=round(size / 1e6, 1), copy_mb=round(copy_bytes / 1e6, 1),
    )
    emit(
        "download_peak_rss_growth", growth, "MB", None, None, "< 50 MB",
        in_process=True, exact_reset=exact,
    )

    # 4. status reads, in-process
    status_reads(job.pk, small.pk, 50)  # warm-up: imports, serializer setup, connection
    big_times, small_times = status_reads(job.pk, small.pk, STATUS_READS)
    for q in (0.5, 0.99):
        name = "p50" if q == 0.5 else "p99"
        emit(
            f"status_read_{name}", percentile(big_times, q), "ms", f"status_read_{name}_1k_rows",
            percentile(small_times, q), "value < 20 ms and ratio < 1.2",
            in_process=True, reads=STATUS_READS,
        )
    emit(
        "status_read_mean", statistics.fmean(big_times), "ms", "status_read_mean_1k_rows",
        statistics.fmean(small_times), "ratio < 1.2", in_process=True,
    )


if __name__ == "__main__":
    try:
        main()
    finally:
        connection.close()
        try:
            recreate = __import__("psycopg").connect(
                with_dbname(SERVER_URL, "postgres"), autocommit=True
            )
            recreate.execute(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)")
            recreate.close()
        except Exception as exc:  # the server may already be gone; nothing to keep
            print(f"could not drop {BENCH_DB}: {exc}", file=sys.stderr)
