"""I/O-bound jobs through the real engine: throughput against concurrency/latency, and pause latency.

Prints JSON lines. A job of the `http` processor calls a local server that answers after 50 ms;
the worker loop (jobs.runner.work_once, as a celery worker runs it) processes it in this process.
  1. rows/s at concurrency C against the ideal C / 0.05 s (goal: ≥ 0.9 for C = 32);
  2. pause latency: from services.pause() returning to the last request finishing at the
     server, over 20 pauses (goal: p95 < 1 s).
Database: BENCH_DATABASE_URL (a throwaway PostgreSQL database, as scripts/bench.sh gives each
benchmark), else a temporary SQLite file.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time

from benchenv import setup  # noqa: E402  (sets up Django)

setup("bench-http-")

from django.core.files.uploadedfile import SimpleUploadedFile  # noqa: E402
from django.core.management import call_command  # noqa: E402

from jobs import runner, services  # noqa: E402
from jobs.models import Job, JobStatus  # noqa: E402
from tests.processors.servers import EchoHandler, LocalServer  # noqa: E402

LATENCY = 0.05
ROWS = int(os.environ.get("BENCH_HTTP_ROWS") or 2000)


def emit(**line) -> None:
    print(json.dumps(line), flush=True)


class EndTimes(EchoHandler):
    def _any(self) -> None:
        if self.path == "/__ends":
            with self.state["lock"]:
                self.send(200, list(self.state["ends"]))
            return
        super()._any()
        with self.state["lock"]:
            self.state["ends"].append(time.time())

    do_GET = _any  # noqa: N815


def serve_forever() -> None:
    """The stand-in API in a process of its own, as a real one would be: its threads must not
    compete with the worker's for this process's interpreter lock."""
    with LocalServer(EndTimes, latency=LATENCY, ends=[]) as server:
        print(server.url, flush=True)
        sys.stdin.read()  # until the benchmark closes the pipe


class RemoteServer:
    def __enter__(self):
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.url = self.proc.stdout.readline().strip()
        return self

    def ends(self) -> list[float]:
        import httpx

        return httpx.get(self.url + "/__ends", timeout=10).json()

    def __exit__(self, *exc):
        self.proc.stdin.close()
        self.proc.wait(10)


def new_job(user, url: str, rows: int, concurrency: int) -> Job:
    text = "name\n" + "".join(f"n{i}\n" for i in range(rows))
    job, _ = services.create_job(
        user, processor="http", params={"method": "GET", "url": url + "/latency?r={name}", "fields": {"ok": "ok"}},
        source=services.Source(upload=SimpleUploadedFile("in.csv", text.encode())), concurrency=concurrency,
        actor="bench",
    )
    services.ingest(job.pk)
    return Job.objects.get(pk=job.pk)


def run_loops(job: Job) -> None:
    """All of the job's loops, each in a thread, as separate worker processes would run them."""

    def loop():
        while runner.work_once(job.pk).action == "continue":
            pass

    threads = [threading.Thread(target=loop) for _ in range(runner.plan_for(job).loops)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def main() -> None:
    call_command("migrate", verbosity=0)
    from django.contrib.auth.models import User

    user, _ = User.objects.get_or_create(username="bench")
    with RemoteServer() as server:
        for concurrency in (8, 32):
            job = new_job(user, server.url, ROWS, concurrency)
            began = time.perf_counter()
            run_loops(job)
            elapsed = time.perf_counter() - began
            job.refresh_from_db()
            assert job.status == JobStatus.COMPLETED, job.status
            ideal = concurrency / LATENCY
            emit(bench="http_job_throughput", value=round(ROWS / elapsed, 1), unit="rows/s",
                 baseline=f"ideal concurrency/latency = {concurrency}/{LATENCY}", baseline_value=ideal,
                 ratio=round(ROWS / elapsed / ideal, 3), goal="ratio >= 0.9 at C = 32", rows=ROWS,
                 concurrency=concurrency, loops=runner.plan_for(job).loops)

        latencies = []
        job = new_job(user, server.url, 20 * 400, 16)
        for _ in range(20):
            worker = threading.Thread(target=run_loops, args=(job,))
            worker.start()
            time.sleep(0.3)  # let it get going
            services.pause(Job.objects.get(pk=job.pk), actor="bench")
            paused_at = time.time()
            worker.join()
            last_end = max(server.ends())
            latencies.append(max(0.0, last_end - paused_at))
            services.resume(Job.objects.get(pk=job.pk), actor="bench")
        latencies.sort()
        p95 = latencies[int(0.95 * (len(latencies) - 1))]
        emit(bench="pause_latency_p95", value=round(p95 * 1000, 1), unit="ms", baseline="request latency",
             baseline_value=LATENCY * 1000, ratio=round(p95 / LATENCY, 2), goal="< 1000 ms",
             pauses=len(latencies), median_ms=round(statistics.median(latencies) * 1000, 1))


if __name__ == "__main__":
    serve_forever() if "--serve" in sys.argv else main()
