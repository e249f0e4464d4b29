"""Benchmark: the http processor's throughput under concurrency, and the rate limiter at the server.

Run from the repository root:  .venv/bin/python tests/bench/bench_http_concurrency.py [--quick]

1. 2,000 rows through ``HTTPProcessor.run_one`` from a ThreadPoolExecutor of 32 threads (what
   the engine does for an I/O-bound processor with concurrency 32) against a local server that
   answers after 50 ms. Ideal: 32 / 0.05 = 640 rows/s. A first run with no latency measures the
   machine's own ceiling (client and server are both Python), reported as ``http_ceiling``.
2. The same processor with ``rate_limit`` = 600/min: every thread calls
   ``jobs.ratelimit.acquire`` before its request; the server records arrival times and we report
   the most requests seen in any rolling 60 s window (the full run lasts 62 s; --quick runs 15 s and
   checks the bound for a 15 s window instead).

Prints one JSON object per line. CACHE_URL decides the limiter's store (locmem by default here;
set CACHE_URL=redis://… to measure against Redis).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "batchhub.settings")
os.environ.setdefault("CACHE_URL", "locmem")
# The stand-in API listens on loopback, which processors may not reach unless allowed.
os.environ.setdefault("BATCHHUB_PROCESSOR_ALLOW_PRIVATE", "127.0.0.0/8")

import django  # noqa: E402
import httpx  # noqa: E402

django.setup()
logging.getLogger("httpx").setLevel(
    logging.WARNING
)  # one INFO line per request would drown the output

from jobs import ratelimit  # noqa: E402
from jobs.processors.base import ProcessorContext, RowInput  # noqa: E402
from jobs.processors.http_api import HTTPProcessor  # noqa: E402
from tests.processors.servers import EchoHandler, LocalServer  # noqa: E402


def max_in_window(times: list[float], window: float) -> int:
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


class ServerProcess:
    """The echo server in its own process: in-process, the server's Python would share the GIL
    with the client's and the benchmark would measure the server, not the processor."""

    def __init__(self, latency: float):
        self.latency = latency

    def __enter__(self) -> ServerProcess:
        ctx = multiprocessing.get_context("spawn")
        queue = ctx.Queue()
        self.process = ctx.Process(target=_serve, args=(queue, self.latency), daemon=True)
        self.process.start()
        self.url = queue.get(timeout=30)
        return self

    @property
    def times(self) -> list[float]:
        return httpx.get(self.url + "/__times", timeout=30).json()

    def __exit__(self, *exc: object) -> None:
        self.process.terminate()
        self.process.join(timeout=5)


def _serve(queue, latency: float) -> None:
    with LocalServer(EchoHandler, latency=latency) as server:
        queue.put(server.url)
        threading.Event().wait()


def rows(n: int) -> list[RowInput]:
    return [RowInput(index=i, ref=str(i + 1), values={"n": i}, inputs={}) for i in range(n)]


def throughput(n_rows: int, concurrency: int, latency: float) -> dict:
    with ServerProcess(latency) as server:
        proc = HTTPProcessor(
            {"url": server.url + "/latency?row={n}", "fields": {"ok": "ok"}, "timeout": 10},
            context=ProcessorContext(job_id="job_bench", concurrency=concurrency),
        )
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(proc.run_one, rows(concurrency)))  # warm the connection pool
            before = len(server.times)
            started = time.perf_counter()
            results = list(pool.map(proc.run_one, rows(n_rows)))
            elapsed = time.perf_counter() - started
        proc.close()
        served = len(server.times) - before
    ideal = concurrency / latency if latency > 0 else float("inf")
    rate = n_rows / elapsed
    return {
        "bench": "http_concurrency",
        "rows": n_rows,
        "concurrency": concurrency,
        "latency_s": latency,
        "seconds": round(elapsed, 3),
        "rows_per_s": round(rate, 1),
        "ideal_rows_per_s": round(ideal, 1) if latency > 0 else None,
        "ratio": round(rate / ideal, 3) if latency > 0 else None,
        "errors": sum(1 for r in results if r.error),
        "server_requests": served,
    }


def rate_limited(per_minute: int, seconds: float, concurrency: int, latency: float) -> dict:
    key = f"job_bench_rl_{time.time_ns()}"
    with ServerProcess(latency) as server:
        proc = HTTPProcessor(
            {"url": server.url + "/latency", "timeout": 10},
            context=ProcessorContext(job_id=key, concurrency=concurrency),
        )
        stop = time.time() + seconds
        errors = []

        def loop() -> None:
            row = rows(1)[0]
            while True:
                try:
                    ratelimit.acquire(key, per_minute, timeout=max(0.0, stop - time.time()))
                except ratelimit.RateLimitTimeout:
                    return
                result = proc.run_one(row)
                if result.error:
                    errors.append(result.error)

        threads = [threading.Thread(target=loop) for _ in range(concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        proc.close()
        times = list(server.times)
    window = min(60.0, seconds)
    plan = ratelimit.plan(per_minute)
    # For a window shorter than a minute the bound is whole slots: capacity × slots it can meet.
    bound = (
        per_minute
        if window >= 60
        else plan.capacity * (math.floor(window / plan.slot_seconds + ratelimit.OPEN_FRACTION) + 1)
    )
    worst = max_in_window(times, window)
    return {
        "bench": "rate_limit",
        "per_minute": per_minute,
        "concurrency": concurrency,
        "seconds": seconds,
        "requests": len(times),
        "window_s": window,
        "max_in_rolling_window": worst,
        "bound": bound,
        "within_limit": worst <= bound,
        "max_in_rolling_1s": max_in_window(times, 1.0),
        "achieved_per_minute": round(len(times) / seconds * 60, 1),
        "limiter_effective_per_minute": round(plan.effective_per_minute, 1),
        "errors": len(errors),
        "cache": os.environ.get("CACHE_URL"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a 15 s rate-limit run instead of 62 s"
    )
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--per-minute", type=int, default=600)
    args = parser.parse_args()
    # The same run with no server latency: what this machine's CPU allows (client and server are
    # both Python here); on a small, busy machine that, not the concurrency, can be the ceiling.
    ceiling = throughput(args.rows, args.concurrency, 0.0)
    print(json.dumps({**ceiling, "bench": "http_ceiling"}), flush=True)
    result = throughput(args.rows, args.concurrency, args.latency)
    reachable = min(result["ideal_rows_per_s"], ceiling["rows_per_s"])
    result["ratio_vs_reachable"] = round(result["rows_per_s"] / reachable, 3)
    print(json.dumps(result), flush=True)
    seconds = 15.0 if args.quick else 62.0
    print(
        json.dumps(rate_limited(args.per_minute, seconds, args.concurrency, args.latency)),
        flush=True,
    )


if __name__ == "__main__":
    main()
