"""Benchmark: downloading a 100,000-row job's results through the real web server.

Run: `DATABASE_URL=postgres://… python tests/bench/bench_results_download.py [ROWS]` (default
100,000) against a PostgreSQL database you can throw away (`scripts/services.sh start DIR` makes
one). Without a PostgreSQL DATABASE_URL it prints a skip line and exits 0.

It writes a finished job straight into the database with COPY, starts gunicorn (one sync worker)
on 127.0.0.1 serving batchhub.wsgi, and downloads `GET /api/v1/jobs/{id}/results` as CSV and JSONL
with an API key, reading the stream as it comes. For each download it prints one JSON line:

    {"bench": "results_download", "format": "csv", "rows": …, "seconds": …, "rows_per_second": …,
     "bytes": …, "baseline": "copy_to_stdout", "baseline_rows_per_second": …, "ratio": …,
     "server_rss_before_kb": …, "server_peak_kb": …, "server_peak_growth_kb": …}

The baseline is PostgreSQL's `COPY (SELECT … ORDER BY index) TO STDOUT` of the same rows read by
this process: the fastest the rows can leave the database at all. The CSV line also gives
`results.stream()` run in this process without HTTP, to show what the web layer adds.
"Flat memory" means the server's peak RSS (VmHWM of the worker process) grows by a few MB at
most, whatever the number of rows.
A last line times one page of `GET /rows` at the end of the job (deep offset).
"""

from __future__ import annotations

import io
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

DATABASE_URL = os.environ.get("DATABASE_URL", "")
if not DATABASE_URL.startswith(("postgres://", "postgresql://")):
    print(
        json.dumps(
            {"bench": "results_download", "skipped": "needs DATABASE_URL pointing at PostgreSQL"}
        )
    )
    sys.exit(0)

_tmp = tempfile.TemporaryDirectory(prefix="bench-results-")
ENV = {
    "DJANGO_SETTINGS_MODULE": "batchhub.settings",
    "BATCHHUB_DATA_DIR": _tmp.name,  # nothing is written beside the project
    "SECRET_KEY": os.environ.get("SECRET_KEY")
    or secrets.token_urlsafe(40),  # the server must share it
    "CACHE_URL": os.environ.get("CACHE_URL") or "locmem",
    "CELERY_BROKER_URL": "memory://",
    "BATCHHUB_RATE_DOWNLOAD": "100000/min",
    "BATCHHUB_RATE_READ": "100000/min",
    "LOG_LEVEL": "WARNING",
}
os.environ.update(ENV)

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from apikeys.services import create_key  # noqa: E402
from jobs.models import Job, JobStatus, Row  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def _worker_pid(master: int) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.1)
    raise RuntimeError("gunicorn started no worker")


def make_job(n: int) -> Job:
    user, _ = get_user_model().objects.get_or_create(username="bench-results")
    job = Job.objects.create(
        owner=user,
        name="bench.csv",
        processor="sentiment",
        params={"threshold": 0.05},
        columns=["id", "text", "score"],
        status=JobStatus.COMPLETED,
        total=n,
        succeeded=n - n // 10,
        failed=n // 10,
    )
    buf = io.StringIO()
    for i in range(n):
        failed = i % 10 == 9
        data = json.dumps([f"id{i}", f"I really liked item number {i}, thanks", i * 0.5])
        output = (
            "\\N"
            if failed
            else json.dumps({"sentiment_label": "positive", "sentiment_score": 0.6908})
        )
        error = "The text is empty." if failed else "\\N"
        status = "failed" if failed else "succeeded"
        buf.write(f"{job.pk}\t{i}\tid{i}\t{data}\t{status}\t{output}\t{error}\t1\n")
    table = Row._meta.db_table
    with connection.cursor() as cursor:
        with cursor.copy(
            f'COPY {table} (job_id, "index", ref, data, status, output, error, attempts) FROM STDIN'
        ) as copy:
            copy.write(buf.getvalue())
    return job


def copy_baseline(job: Job) -> tuple[float, int]:
    sql = (
        'COPY (SELECT "index", ref, status, data::text, output::text, error '
        f"FROM {Row._meta.db_table} "
        f'WHERE job_id = {int(job.pk)} ORDER BY "index") TO STDOUT'
    )
    size = 0
    start = time.perf_counter()
    with connection.cursor() as cursor:
        with cursor.copy(sql) as copy:
            for block in copy:
                size += len(block)
    return time.perf_counter() - start, size


def main() -> None:
    import httpx

    call_command("migrate", verbosity=0)
    call_command("migrate", run_syncdb=True, verbosity=0)
    job = make_job(N)
    user = job.owner
    _key, raw = create_key(user, f"bench-{secrets.token_hex(3)}")
    from jobs import results

    # The same stream in this process, without HTTP: what the server adds on top of it.
    start = time.perf_counter()
    in_process_bytes = sum(len(piece) for piece in results.stream(job, "csv"))
    in_process_s = time.perf_counter() - start
    connection.close()  # the server gets its own connections

    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "batchhub.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
            "--worker-class",
            "sync",
            "--timeout",
            "300",
        ],
        cwd=ROOT,
        env={**os.environ, **ENV},
        stdout=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/api/v1"
    headers = {"X-API-Key": raw}
    try:
        worker = _worker_pid(server.pid)
        with httpx.Client(headers=headers, timeout=300) as client:
            for _ in range(300):
                try:
                    if client.get(f"{base}/processors").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.1)
            # Warm the worker: imports, the connection, a small download.
            client.get(f"{base}/jobs/{job.public_id}/rows?limit=5").raise_for_status()

            baseline_s, _ = copy_baseline(job)
            assert in_process_bytes > 0
            baseline_rate = N / baseline_s
            for fmt in ("csv", "jsonl"):
                # Reset the worker's peak (VmHWM) to its RSS now: the peak is this download's.
                Path(f"/proc/{worker}/clear_refs").write_text("5")
                rss_before = _status_kb(worker, "VmRSS")
                size = lines = 0
                start = time.perf_counter()
                with client.stream(
                    "GET", f"{base}/jobs/{job.public_id}/results", params={"format": fmt}
                ) as r:
                    r.raise_for_status()
                    for block in r.iter_bytes():
                        size += len(block)
                        lines += block.count(b"\n")
                seconds = time.perf_counter() - start
                peak = _status_kb(worker, "VmHWM")
                expected = N + (1 if fmt == "csv" else 0)
                assert lines == expected, (fmt, lines, expected)
                print(
                    json.dumps(
                        {
                            "bench": "results_download",
                            "format": fmt,
                            "rows": N,
                            "seconds": round(seconds, 3),
                            "rows_per_second": round(N / seconds),
                            "bytes": size,
                            "baseline": "copy_to_stdout",
                            "baseline_rows_per_second": round(baseline_rate),
                            "ratio": round((N / seconds) / baseline_rate, 3),
                            **(
                                {
                                    "in_process_stream_rows_per_second": round(N / in_process_s),
                                    "http_vs_in_process": round(in_process_s / seconds, 3),
                                }
                                if fmt == "csv"
                                else {}
                            ),
                            "server_rss_before_kb": rss_before,
                            "server_peak_kb": peak,
                            "server_peak_growth_kb": peak - rss_before,
                        }
                    ),
                    flush=True,
                )

            offset = max(0, N - 50)
            timings = []
            for _ in range(5):
                start = time.perf_counter()
                page = client.get(
                    f"{base}/jobs/{job.public_id}/rows", params={"offset": offset, "limit": 50}
                )
                timings.append(time.perf_counter() - start)
                page.raise_for_status()
            assert len(page.json()["results"]) == 50
            print(
                json.dumps(
                    {
                        "bench": "rows_page_deep_offset",
                        "rows": N,
                        "offset": offset,
                        "limit": 50,
                        "median_ms": round(sorted(timings)[2] * 1000, 1),
                    }
                ),
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(timeout=30)
        Row.objects.filter(job=job).delete()
        job.delete()


if __name__ == "__main__":
    main()
