"""Benchmark: the CPU one status poll costs the web process, below Django's stack and through it.

Run: `python tests/bench/bench_poll_cpu.py` with PostgreSQL in BENCH_DATABASE_URL and Redis in
CACHE_URL (scripts/bench.sh gives both). It makes a user, a running job whose live status is in
the cache, a signed-in browser session and an API key, then calls the project's WSGI application
in this process, as gunicorn would call it, with the two polls a job's watchers make:

- `api`: `GET /api/v1/jobs/<id>` with the key (jobs/fast_status.py below the stack);
- `partial`: the job page's live part with the session's cookies (accounts/fast_page_poll.py),
  most polls finding the fragment of their second made (many pollers of one job);
- `partial_first_in_its_second`: the same with the fragments forgotten before each poll, as a
  single page polling once a second finds none of its second: the render is in every poll.

Each is timed in rounds of POLL_CALLS calls, alternating the fast paths on and off
(BATCHHUB_FAST_STATUS) so both sides share the machine's moods; a line gives the median round's
CPU a poll of this process (value), the same through the stack (baseline) and their ratio, with
Redis's own CPU a poll (its INFO). No HTTP server and no network between client and server here:
`bench_web` measures those; this measures the Python a poll runs, in one run, as a ratio.
"""

from __future__ import annotations

import io
import json
import os
import statistics
import sys
import time
from collections.abc import Callable

from benchenv import setup  # noqa: E402  (sets up Django)

CACHE_URL = os.environ.get("CACHE_URL", "")
if not CACHE_URL.startswith("redis://") or not os.environ.get("BENCH_DATABASE_URL"):
    print(
        json.dumps(
            {"bench": "poll_cpu", "skipped": "needs BENCH_DATABASE_URL and Redis in CACHE_URL"}
        )
    )
    sys.exit(0)

setup("bench-poll-cpu-", CACHE_URL=CACHE_URL, BATCHHUB_RATE_READ="1000000000/min")

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.cache import cache  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import Client  # noqa: E402
from django.urls import reverse  # noqa: E402

from apikeys.services import create_key  # noqa: E402
from batchhub.wsgi import application  # noqa: E402
from jobs import livestatus, progress_fragment  # noqa: E402
from jobs.models import Job, JobStatus  # noqa: E402

POLL_CALLS = int(os.environ.get("BENCH_POLL_CALLS") or 2000)
ROUNDS = int(os.environ.get("BENCH_POLL_ROUNDS") or 4)  # of each side, alternated
HOST = "localhost"


def _environ(path: str, query: str, headers: dict[str, str]) -> dict:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": HOST,
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": HOST,
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_USER_AGENT": "bench",
        "HTTP_ACCEPT": "*/*",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": io.StringIO(),
        "wsgi.url_scheme": "http",
        **headers,
    }


def _redis_cpu_s() -> float:
    info = livestatus._redis()._cache.get_client(write=True).info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


def _round(
    path: str, query: str, headers: dict[str, str], fast: bool, before_each: Callable[[], None]
) -> tuple[float, float]:
    """CPU of this process and of Redis, µs a poll, over POLL_CALLS polls."""
    settings.BATCHHUB_FAST_STATUS = fast
    statuses: set[str] = set()

    def start_response(status, response_headers, exc_info=None):
        statuses.add(status)

    redis_before, before = _redis_cpu_s(), time.process_time()
    for _ in range(POLL_CALLS):
        before_each()
        b"".join(application(_environ(path, query, headers), start_response))
    cpu, redis_cpu = time.process_time() - before, _redis_cpu_s() - redis_before
    if statuses != {"200 OK"}:
        raise RuntimeError(f"polls answered {sorted(statuses)}")
    return cpu / POLL_CALLS * 1e6, redis_cpu / POLL_CALLS * 1e6


def _measure(
    name: str,
    path: str,
    query: str,
    headers: dict[str, str],
    before_each: Callable[[], None] = lambda: None,
) -> dict:
    _round(path, query, headers, True, before_each)  # warm both paths: imports, connections
    _round(path, query, headers, False, before_each)
    sides: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    for _ in range(ROUNDS):
        for fast in (True, False):
            sides[fast].append(_round(path, query, headers, fast, before_each))
    fast_us = statistics.median(s[0] for s in sides[True])
    stack_us = statistics.median(s[0] for s in sides[False])
    return {
        "bench": f"poll_cpu_{name}",
        "value": round(fast_us, 1),
        "unit": "µs of web-process CPU a poll",
        "baseline": "the same poll through Django's whole stack (fast paths off), same run",
        "baseline_value": round(stack_us, 1),
        "ratio": round(fast_us / stack_us, 3),
        "goal": "lower",
        "rounds_us": [round(s[0], 1) for s in sides[True]],
        "baseline_rounds_us": [round(s[0], 1) for s in sides[False]],
        "redis_cpu_us": round(statistics.median(s[1] for s in sides[True]), 1),
        "baseline_redis_cpu_us": round(statistics.median(s[1] for s in sides[False]), 1),
        "calls_per_round": POLL_CALLS,
    }


def main() -> None:
    call_command("migrate", verbosity=0)
    cache.clear()
    user = get_user_model().objects.create_user("bench-poll", password="bench-poll-password")
    job = Job.objects.create(
        owner=user,
        name="bench.csv",
        processor="template",
        params={"template": "{text}"},
        columns=["text"],
        status=JobStatus.PROCESSING,
        total=1_000_000,
        succeeded=250_000,
    )
    livestatus.publish(job)  # outside a transaction: written at once
    if livestatus.load(job.public_id) is None:
        raise RuntimeError("the job's live status was not published")
    _, raw_key = create_key(user, "bench")
    browser = Client()
    browser.force_login(user)
    cookies = {name: morsel.value for name, morsel in browser.cookies.items()}
    cookies.setdefault(settings.CSRF_COOKIE_NAME, "b" * 32)  # as the page's load leaves it
    cookie = "; ".join(f"{name}={value}" for name, value in cookies.items())
    lines = [
        _measure(
            "api",
            reverse("api-jobs-detail", kwargs={"id": job.public_id}),
            "",
            {"HTTP_X_API_KEY": raw_key},
        ),
        _measure(
            "partial",
            reverse("jobs:progress", args=[job.public_id]),
            "seen=processing-250000-0",
            {"HTTP_COOKIE": cookie, "HTTP_HX_REQUEST": "true"},
        ),
        _measure(
            "partial_first_in_its_second",
            reverse("jobs:progress", args=[job.public_id]),
            "seen=processing-250000-0",
            {"HTTP_COOKIE": cookie, "HTTP_HX_REQUEST": "true"},
            before_each=progress_fragment.clear,
        ),
    ]
    for line in lines:
        print(json.dumps(line))


if __name__ == "__main__":
    main()
