"""I/O-bound jobs through the real engine: throughput against concurrency/latency; pause latency.

Prints JSON lines. A job of the `http` processor calls a local server (a process of its own) that
answers after 50 ms; a real `celery worker` with 2 worker processes runs the job, as `make run`
does. Figures:
  1. rows/s at concurrency C against the ideal C / 0.05 s (goal: ≥ 0.9 for C = 32), timed from
     the job's loops being sent to the job being completed;
  2. pause latency: from services.pause() returning to the last request finishing at the
     server, over 20 pauses (goal: p95 < 1 s).
Needs PostgreSQL (BENCH_DATABASE_URL, a throwaway database, as scripts/bench.sh gives each
benchmark) and Redis (CELERY_BROKER_URL); without them it prints a "skipped" line.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from benchenv import setup  # noqa: E402  (sets up Django)

BROKER = os.environ.get("CELERY_BROKER_URL", "")
if "--serve" not in sys.argv and not (
    os.environ.get("BENCH_DATABASE_URL", "").startswith("postgres") and BROKER.startswith("redis")
):
    print(json.dumps({"bench": "http_job", "skipped": "needs BENCH_DATABASE_URL (PostgreSQL) and "
                      "CELERY_BROKER_URL (Redis); scripts/bench.sh gives both"}), flush=True)
    sys.exit(0)
TMP = setup("bench-http-", CELERY_BROKER_URL=BROKER or "memory://")

from django.core.files.uploadedfile import SimpleUploadedFile  # noqa: E402
from django.core.management import call_command  # noqa: E402

from jobs import chunks, creation, enqueue, services  # noqa: E402
from jobs.ingest import loading  # noqa: E402
from jobs.models import TERMINAL, Job, JobStatus  # noqa: E402
from tests.support.worker import Worker  # noqa: E402

# Loops are sent to the worker by hand, when the clock starts (not by ingest, which runs here).
_send_loops = chunks.start_loops
enqueue.start_ingest = lambda job_pk: None

LATENCY = 0.05
ROWS = int(os.environ.get("BENCH_HTTP_ROWS") or 10000)


def emit(**line) -> None:
    print(json.dumps(line), flush=True)


class StandInAPI:
    """The outside API: every request answered after LATENCY, on keep-alive connections.

    asyncio in a process of its own, so that the stand-in costs the shared CPU as little as a
    remote service would (a thread per connection and full header parsing, as in the tests'
    http.server stand-ins, cost about as much CPU per request as the client). It records when
    each answer went out (GET /__ends) and the most requests it held at once (GET /__peak).
    """

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.inflight = 0
        self.peak = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b" ", 2)[1]
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                if length:
                    await reader.readexactly(length)
                if target == b"/__ends":
                    body = json.dumps(self.ends).encode()
                elif target == b"/__peak":
                    body = json.dumps(self.peak).encode()
                    self.peak = 0
                else:
                    self.inflight += 1
                    self.peak = max(self.peak, self.inflight)
                    await asyncio.sleep(LATENCY)
                    self.inflight -= 1
                    self.ends.append(time.time())
                    body = b'{"ok": true}'
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
                )
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass  # the client went away, or the benchmark is over
        finally:
            writer.close()

    async def serve(self) -> None:
        server = await asyncio.start_server(self.handle, "127.0.0.1", 0, backlog=256)
        print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # until the benchmark closes the pipe


def serve_forever() -> None:
    asyncio.run(StandInAPI().serve())


class RemoteServer:
    def __enter__(self):
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.url = self.proc.stdout.readline().strip()
        return self

    def ends(self) -> list[float]:
        import httpx

        return httpx.get(self.url + "/__ends", timeout=10).json()

    def peak(self) -> int:
        """Most requests held at once since the last call."""
        import httpx

        return httpx.get(self.url + "/__peak", timeout=10).json()

    def __exit__(self, *exc):
        self.proc.stdin.close()
        self.proc.wait(10)


def new_job(user, url: str, rows: int, concurrency: int) -> Job:
    text = "name\n" + "".join(f"n{i}\n" for i in range(rows))
    job, _ = creation.create_job(
        user,
        processor="http",
        params={"method": "GET", "url": url + "/latency?r={name}", "fields": {"ok": "ok"}},
        source=creation.Source(upload=SimpleUploadedFile("in.csv", text.encode())),
        concurrency=concurrency,
        actor="bench",
    )
    chunks.start_loops = lambda job: None
    try:
        loading.ingest(job.pk)
    finally:
        chunks.start_loops = _send_loops
    return Job.objects.get(pk=job.pk)


def terminal(job_pk: int):
    job = Job.objects.get(pk=job_pk)
    return job if job.status in TERMINAL else None


def main() -> None:
    call_command("migrate", verbosity=0)
    from django.contrib.auth.models import User

    user, _ = User.objects.get_or_create(username="bench")
    with RemoteServer() as server:
        worker = Worker(TMP, concurrency=2, name="bench-http")
        try:
            run(user, server, worker)
        finally:
            worker.stop()


def steady_rate(ends: list[float]) -> float:
    """Answers per second between the 10th and the 90th percentile of their times."""
    ends = sorted(ends)
    lo, hi = len(ends) // 10, len(ends) * 9 // 10
    return (hi - lo) / (ends[hi] - ends[lo])


def bare_client(
    url: str, concurrency: int, requests: int, kind: str = "processors"
) -> tuple[float, float]:
    """The yardstick for the engine's own cost: the same requests from `concurrency` threads
    sharing one pooled client, with no engine around them: the processors' own client
    (jobs/processors/_httpclient.py), or for comparison an httpx one, which they used before.
    Returns (requests/s, CPU ms per request in this process)."""
    import httpx

    from jobs.processors import _httpclient

    if kind == "httpx":
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        client = httpx.Client(limits=limits)
    else:
        client = _httpclient.make_client(concurrency=concurrency, timeout=30)

    def one(i: int) -> None:
        response = client.request("GET", f"{url}/latency?r=n{i}")
        assert response.status_code == 200, response.status_code

    with client:
        cpu, began = time.process_time(), time.perf_counter()
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(requests)))
        return (
            requests / (time.perf_counter() - began),
            (time.process_time() - cpu) * 1000 / requests,
        )


def run(user, server: RemoteServer, worker: Worker) -> None:
    # A first small job, so that the pool processes have imported the processors and opened
    # their database connections before anything is timed.
    warm = new_job(user, server.url, 200, 32)
    _send_loops(warm)
    worker.wait_for(lambda: terminal(warm.pk), message="the warm-up job")
    for concurrency in (8, 32):
        for kind in ("processors", "httpx"):
            bare_rps, bare_cpu_ms = bare_client(
                server.url, concurrency, min(ROWS, concurrency * 100), kind
            )
            emit(
                bench="http_bare_client",
                value=round(bare_rps, 1),
                unit="requests/s",
                baseline=f"ideal concurrency/latency = {concurrency}/{LATENCY}",
                baseline_value=concurrency / LATENCY,
                ratio=round(bare_rps / (concurrency / LATENCY), 3),
                goal="none (what one process of threads sharing one client reaches on this "
                "machine, no engine)",
                client=kind,
                concurrency=concurrency,
                cpu_ms_per_request=round(bare_cpu_ms, 2),
            )
        job = new_job(user, server.url, ROWS, concurrency)
        server.peak()
        cpu = worker.cpu_seconds()
        began, wall_began = time.perf_counter(), time.time()
        _send_loops(job)
        job = worker.wait_for(lambda pk=job.pk: terminal(pk), interval=0.01, message="the job")
        elapsed = time.perf_counter() - began
        cpu = worker.cpu_seconds() - cpu
        assert job.status == JobStatus.COMPLETED and job.succeeded == ROWS, (
            job.status,
            job.succeeded,
        )
        ideal = concurrency / LATENCY
        ends = sorted(t for t in server.ends() if t >= wall_began)
        steady = steady_rate(ends)
        emit(
            bench="http_job_throughput",
            value=round(ROWS / elapsed, 1),
            unit="rows/s",
            baseline=f"ideal concurrency/latency = {concurrency}/{LATENCY}",
            baseline_value=ideal,
            ratio=round(ROWS / elapsed / ideal, 3),
            goal="ratio >= 0.9 at C = 32",
            rows=ROWS,
            concurrency=concurrency,
            loops=chunks.plan_for(job).loops,
            worker_processes=2,
            peak_in_flight_at_server=server.peak(),
            worker_cpu_ms_per_row=round(cpu * 1000 / ROWS, 2),
            # Between the 10th and the 90th percentile of the answers: without the job's start
            # (tasks picked up, processor built, first chunks claimed) and its end (the last
            # rows, finalizing), which weigh more the smaller the job.
            steady_rows_per_s=round(steady, 1),
            steady_ratio=round(steady / ideal, 3),
            # Where the rest goes: from sending the loops to the first answer (one latency of
            # it is the request itself), and from the last answer to the job being completed.
            first_answer_s=round(ends[0] - wall_began, 3),
            completed_after_last_answer_s=round(wall_began + elapsed - ends[-1], 3),
        )

    latencies = []
    job = new_job(user, server.url, 20 * 400, 16)
    for _ in range(20):
        _send_loops(job) if not latencies else None  # resume() sends them after the first pause
        time.sleep(0.5)  # let it get going
        paused = services.pause(Job.objects.get(pk=job.pk), actor="bench")
        paused_at = time.time()
        assert paused.status == JobStatus.PAUSED, paused.status
        # Paused for good when no row is running any more and the server has gone quiet.
        worker.wait_for(
            lambda: Job.objects.get(pk=job.pk).running == 0, interval=0.01, message="the pause"
        )
        time.sleep(0.2)
        last_end = max(server.ends())
        latencies.append(max(0.0, last_end - paused_at))
        services.resume(Job.objects.get(pk=job.pk), actor="bench")
    latencies.sort()
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    emit(
        bench="pause_latency_p95",
        value=round(p95 * 1000, 1),
        unit="ms",
        baseline="request latency",
        baseline_value=LATENCY * 1000,
        ratio=round(p95 / LATENCY, 2),
        goal="< 1000 ms",
        pauses=len(latencies),
        median_ms=round(statistics.median(latencies) * 1000, 1),
    )


if __name__ == "__main__":
    serve_forever() if "--serve" in sys.argv else main()
