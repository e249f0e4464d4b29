"""Benchmark: the embedded default (SQLite + kombu's filesystem broker) against PostgreSQL + Redis.

Run: `python tests/bench/bench_sqlite.py` (`make bench` runs it with PostgreSQL and Redis from
scripts/services.sh). BENCH_SQLITE_ROWS sets the big job (default 100,000 rows).

The same generated CSV (tests/bench/benchdata.py, as bench_engine's) is processed by a `template`
job on each database in a child process of its own (Django is set up once per process):
- ingest: `loading.ingest()` in-process, rows/s, against one bare executemany of the same
  tuples into a table without index (the floor of any insert, measured in the same run), with
  the prober below taking the write lock while it runs;
- processing: a 1,000-row job, then the big job, on a real worker started with the Procfile's
  `worker` line (as `make run` starts it), from the loops being sent to the job being completed;
- on SQLite, a prober in this process takes the write lock every 50 ms while the big job runs,
  turn about through the project's connection (a transaction, as a web request's write) and a
  plain sqlite3 connection (BEGIN IMMEDIATE … ROLLBACK, as a program beside BatchHub): the
  first's longest wait is the longest a web request's write could be kept waiting by the
  engine's write transactions.
Then one JSON line per figure: SQLite's rate against PostgreSQL's on the same file, against a
bare csv.reader → format_map → csv.writer loop, and the big job's rate against the 1,000-row
job's (cost per row must not grow with the job).
Without PostgreSQL + Redis (DATABASE_URL / CELERY_BROKER_URL) only the SQLite lines are printed.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.benchdata import TEMPLATE, bare_loop, make_csv  # noqa: E402

ROWS = int(os.environ.get("BENCH_SQLITE_ROWS") or 100_000)
SMALL_ROWS = 1_000


def emit(bench: str, value: float, unit: str, baseline: str | None, baseline_value, goal: str,
         **extra) -> None:
    ratio = round(value / baseline_value, 4) if baseline_value else None
    print(json.dumps({
        "bench": bench, "value": round(value, 3), "unit": unit, "baseline": baseline,
        "baseline_value": None if baseline_value is None else round(baseline_value, 3),
        "ratio": ratio, "goal": goal, "rows": ROWS, **extra,
    }), flush=True)


def procfile_worker_command() -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith("worker:"):
            return line.split(":", 1)[1].strip()
    raise RuntimeError("no worker line in the Procfile")


# --- the child: one database ---------------------------------------------------------------------


class LockProbe:
    """Takes SQLite's write lock every 50 ms in a process of its own (as a web request's write
    comes from the web's process), turn about through the project's connection (a transaction,
    which takes its turn first: batchhub/sqlite3/base.py) and through a plain sqlite3 connection
    (BEGIN IMMEDIATE … ROLLBACK, as a program beside BatchHub), and records how long each waited.
    """

    def __init__(self, path: str):
        self.path = path
        self.waits: list[float] = []  # the project's connection: what a web request's write sees
        self.plain_waits: list[float] = []
        self._proc: subprocess.Popen | None = None

    def start(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, __file__, "--probe", self.path], cwd=ROOT, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True,
        )
        assert self._proc.stdout is not None
        if self._proc.stdout.readline().strip() != "probing":
            raise RuntimeError("the lock probe did not start")

    def stop_and_read(self) -> None:
        assert self._proc is not None
        out, _ = self._proc.communicate("stop\n", timeout=60)
        figures = json.loads(out.strip().splitlines()[-1])
        self.waits, self.plain_waits = figures["waits"], figures["plain_waits"]


def run_probe(path: str) -> None:
    """The probe's process: Django on the same database as the child, probing until stdin says
    stop, then the waits as one JSON line."""
    os.environ.update({"DJANGO_SETTINGS_MODULE": "batchhub.settings",
                       "DATABASE_URL": f"sqlite:///{path}", "BATCHHUB_TESTING": "0"})
    import django

    django.setup()
    from django.db import connection, transaction

    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    waits: list[float] = []
    plain_waits: list[float] = []
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    print("probing", flush=True)
    while not stop.is_set():
        start = time.perf_counter()
        with transaction.atomic():  # BEGIN IMMEDIATE: the write lock
            waits.append(time.perf_counter() - start)
        time.sleep(0.025)
        start = time.perf_counter()
        db.execute("BEGIN IMMEDIATE")
        plain_waits.append(time.perf_counter() - start)
        db.execute("ROLLBACK")
        time.sleep(0.025)
    db.close()
    connection.close()
    print(json.dumps({"waits": waits, "plain_waits": plain_waits}), flush=True)


def bare_executemany(path: str, job_id: int) -> float:
    """Seconds for one executemany of the job's row tuples into a table with no index, the floor
    of what any SQLite insert of these rows costs on this machine at this moment."""
    db = sqlite3.connect(path, isolation_level=None)
    tuples = db.execute(
        'SELECT job_id, "index", ref, data, status, attempts FROM jobs_row WHERE job_id = ?',
        (job_id,),
    ).fetchall()
    db.execute("CREATE TABLE bench_plain (job_id, idx, ref, data, status, attempts)")
    began = time.perf_counter()
    db.execute("BEGIN IMMEDIATE")
    db.executemany("INSERT INTO bench_plain VALUES (?, ?, ?, ?, ?, ?)", tuples)
    db.execute("COMMIT")
    took = time.perf_counter() - began
    db.execute("DROP TABLE bench_plain")
    db.close()
    return took


def child(engine: str, tmp: Path) -> dict:
    data = tmp / engine
    data.mkdir()
    env = {"BATCHHUB_DATA_DIR": str(data), "DJANGO_SETTINGS_MODULE": "batchhub.settings",
           "BATCHHUB_MAX_ROWS": str(max(ROWS, 1_000_000)), "BATCHHUB_TESTING": "0",
           "MEDIA_ROOT": str(data / "media")}
    if engine == "sqlite":
        env["DATABASE_URL"] = f"sqlite:///{data / 'batchhub.sqlite3'}"
        for name in ("CELERY_BROKER_URL", "CACHE_URL"):
            os.environ.pop(name, None)  # the embedded default: filesystem broker, file cache
    else:
        env["DATABASE_URL"] = os.environ["BENCH_PG_URL"]
        env["CACHE_URL"] = "locmem"
    os.environ.update(env)
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.files import File
    from django.core.management import call_command

    from jobs import chunks, creation, enqueue
    from jobs.ingest import loading
    from jobs.models import TERMINAL, Job, JobStatus

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench", "b@example.com", "bench-password-1")
    enqueue.start_ingest = lambda job_pk: None
    start_loops, chunks.start_loops = chunks.start_loops, lambda job: None

    def create(path: Path) -> Job:
        with path.open("rb") as fh:
            job, _ = creation.create_job(
                user, processor="template", params={"template": TEMPLATE},
                source=creation.Source(upload=File(fh, name=path.name)), concurrency=2,
                actor="bench",
            )
        return job

    small = create(tmp / "small.csv")
    loading.ingest(small.pk)
    big = create(tmp / "big.csv")
    ingest_probe = None
    if engine == "sqlite":
        ingest_probe = LockProbe(settings.DATABASES["default"]["NAME"])
        ingest_probe.start()
    began = time.perf_counter()
    loading.ingest(big.pk)
    ingest_s = time.perf_counter() - began
    ingest_figures = {}
    if ingest_probe is not None:
        ingest_probe.stop_and_read()
        ingest_figures = {
            "ingest_lock_wait_max_ms": max(ingest_probe.waits) * 1000,
            "ingest_lock_plain_wait_max_ms": max(ingest_probe.plain_waits) * 1000,
            "ingest_lock_probes": len(ingest_probe.waits),
            "bare_executemany_s": bare_executemany(settings.DATABASES["default"]["NAME"], big.pk),
        }

    # The Procfile's line through bash, as honcho runs it (its ${VAR:-default}s expanded).
    worker_env = dict(os.environ)
    worker_env["PATH"] = f"{Path(sys.executable).parent}:{worker_env.get('PATH', '')}"
    log = open(data / "worker.log", "wb")
    worker = subprocess.Popen(
        ["bash", "-c", procfile_worker_command()], cwd=ROOT, env=worker_env, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )
    figures: dict = {"ingest_s": ingest_s, "worker": procfile_worker_command(), **ingest_figures}
    try:
        deadline = time.monotonic() + 60
        while b" ready." not in (data / "worker.log").read_bytes():
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError((data / "worker.log").read_text()[-3000:])
            time.sleep(0.2)

        def run(job: Job) -> float:
            began = time.perf_counter()
            start_loops(job)
            deadline = time.monotonic() + 1800
            while True:
                job = Job.objects.get(pk=job.pk)
                if job.status in TERMINAL:
                    break
                if time.monotonic() > deadline or worker.poll() is not None:
                    raise RuntimeError((data / "worker.log").read_text()[-3000:])
                time.sleep(0.05)
            took = time.perf_counter() - began
            assert job.status == JobStatus.COMPLETED and job.succeeded == job.total, job.counts
            return took

        figures["small_s"] = run(small)
        probe = None
        if engine == "sqlite":
            probe = LockProbe(settings.DATABASES["default"]["NAME"])
            probe.start()
        figures["big_s"] = run(big)
        if probe is not None:
            probe.stop_and_read()
            for prefix, waits in (("lock", probe.waits), ("lock_plain", probe.plain_waits)):
                waits = sorted(waits)
                figures[f"{prefix}_wait_max_ms"] = waits[-1] * 1000
                figures[f"{prefix}_wait_p99_ms"] = waits[int(0.99 * (len(waits) - 1))] * 1000
                figures[f"{prefix}_wait_mean_ms"] = statistics.fmean(waits) * 1000
                figures[f"{prefix}_probes"] = len(waits)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
        log.close()
    return figures


# --- the parent ----------------------------------------------------------------------------------


def with_dbname(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


def run_child(engine: str, tmp: Path, extra_env: dict[str, str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", engine, str(tmp)],
        env={**os.environ, **extra_env}, capture_output=True, text=True, cwd=ROOT,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{engine} run failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-sqlite-") as name:
        tmp = Path(name)
        make_csv(tmp / "big.csv", ROWS)
        make_csv(tmp / "small.csv", SMALL_ROWS)
        bare_s = bare_loop(tmp / "big.csv", tmp / "bare-out.csv")
        lite = run_child("sqlite", tmp, {})
        pg = None
        server = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("DATABASE_URL", "")
        broker = os.environ.get("CELERY_BROKER_URL", "")
        if server.startswith(("postgres://", "postgresql://")) and broker.startswith("redis://"):
            pg = run_child("postgres", tmp, {"BENCH_PG_URL": server})

    rate = ROWS / lite["big_s"]
    pg_rate = ROWS / pg["big_s"] if pg else None
    worker = lite["worker"]
    emit("processing_template_sqlite", rate, "rows/s", "postgres_same_file", pg_rate,
         "ratio >= 0.25", seconds=round(lite["big_s"], 2), worker=worker,
         postgres_seconds=round(pg["big_s"], 2) if pg else None)
    emit("processing_template_sqlite_vs_bare", rate, "rows/s", "bare_python_loop", ROWS / bare_s,
         "none (PostgreSQL's line in bench_engine: 0.35 of it)")
    emit("processing_template_sqlite_size", rate, "rows/s", f"sqlite_{SMALL_ROWS}_rows",
         SMALL_ROWS / lite["small_s"], "ratio >= 0.8 (cost per row does not grow with the job)",
         small_seconds=round(lite["small_s"], 2))
    if pg:
        emit("processing_template_postgres_size", pg_rate, "rows/s",
             f"postgres_{SMALL_ROWS}_rows", SMALL_ROWS / pg["small_s"], "none")
    emit("ingest_sqlite", ROWS / lite["ingest_s"], "rows/s",
         "postgres_same_file" if pg else None, ROWS / pg["ingest_s"] if pg else None,
         ">= 50,000 rows/s", seconds=round(lite["ingest_s"], 2))
    emit("ingest_sqlite_vs_bare_executemany", ROWS / lite["ingest_s"], "rows/s",
         "bare_executemany_plain_table", ROWS / lite["bare_executemany_s"],
         "none (read, check, encode and insert with its index, against an insert alone)")
    emit("ingest_sqlite_write_lock_wait_max", lite["ingest_lock_wait_max_ms"], "ms", None, None,
         "< 200 ms (a writer waiting for the ingest's batch transactions)",
         probes=lite["ingest_lock_probes"],
         plain_sqlite3_max_ms=round(lite["ingest_lock_plain_wait_max_ms"], 1))
    emit("sqlite_write_lock_wait_max", lite["lock_wait_max_ms"], "ms", None, None,
         "< 200 ms (the engine's longest write transaction, as a writer waiting for it sees it)",
         p99_ms=round(lite["lock_wait_p99_ms"], 1), mean_ms=round(lite["lock_wait_mean_ms"], 2),
         probes=lite["lock_probes"])
    emit("sqlite_write_lock_wait_max_plain_sqlite3", lite["lock_plain_wait_max_ms"], "ms", None,
         None, "none (a writer beside BatchHub, on a plain sqlite3 connection: no turns)",
         p99_ms=round(lite["lock_plain_wait_p99_ms"], 1),
         mean_ms=round(lite["lock_plain_wait_mean_ms"], 2), probes=lite["lock_plain_probes"])


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--probe":
        run_probe(sys.argv[2])
    elif len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(child(sys.argv[2], Path(sys.argv[3]))), flush=True)
    else:
        main()
