"""Benchmark: the cost of authenticating one API request with an API key, beside session auth.

Run: `python tests/bench/bench_apikey_auth.py [N]` (default N = 1000). It builds a throwaway SQLite
database in a temporary directory (or uses BENCH_DATABASE_URL, which must point at a database you
can throw away), creates a user, a key and a logged-in session, then authenticates N requests
through DRF with each method and prints one JSON line per measurement:

    {"bench": "apikey_auth", "per_request_ms": …, "baseline": "session_auth", "baseline_ms": …,
     "ratio": …, …}

Both sides do their real work per request: the key side parses and checks the key, loads the key
and its owner (one query), compares the HMAC digest, checks expiry/revocation; the session side runs
the session and authentication middleware, loads the session and the user (two queries), verifies
the session hash and DRF's CSRF check. Request objects are built before the clock starts.
"""

from __future__ import annotations

import json
import os
import secrets
import statistics
import sys
import time

from benchenv import setup  # noqa: E402  (sets up Django)

setup("bench-apikeys-")

from django.apps import apps  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import (  # noqa: E402
    BACKEND_SESSION_KEY,
    HASH_SESSION_KEY,
    SESSION_KEY,
    get_user_model,
)
from django.contrib.auth.middleware import AuthenticationMiddleware  # noqa: E402
from django.contrib.sessions.backends.db import SessionStore  # noqa: E402
from django.contrib.sessions.middleware import SessionMiddleware  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.test import RequestFactory  # noqa: E402
from rest_framework.authentication import SessionAuthentication  # noqa: E402
from rest_framework.request import Request  # noqa: E402

from apikeys import services  # noqa: E402
from apikeys.auth import APIKeyAuthentication  # noqa: E402

WARMUP = 50


class Timing:
    def __init__(self, samples: list[float], cpu_ms: float):
        self.samples = samples  # wall-clock ms per request
        self.mean = statistics.fmean(samples)
        self.p95 = statistics.quantiles(samples, n=20)[18]
        # CPU time per request: what a busy machine (other processes) cannot inflate.
        self.cpu_ms = cpu_ms


def _timed(requests: list, authenticate) -> Timing:
    for request in requests[:WARMUP]:
        authenticate(request)
    samples = []
    cpu_start = time.process_time()
    for request in requests[WARMUP:]:
        start = time.perf_counter_ns()
        authenticate(request)
        samples.append((time.perf_counter_ns() - start) / 1e6)
    cpu_ms = (time.process_time() - cpu_start) * 1000 / len(samples)
    return Timing(samples, cpu_ms)


def main(n: int) -> None:
    # Tables straight from the models, as the test suite does (--nomigrations): no app's
    # migrations have to exist, and on PostgreSQL every foreign key target is created together.
    settings.MIGRATION_MODULES = {app.label: None for app in apps.get_app_configs()}
    call_command("migrate", run_syncdb=True, verbosity=0)
    # A fresh user each run, removed at the end, so BENCH_DATABASE_URL can be reused.
    name = f"bench-{secrets.token_hex(4)}"
    user = get_user_model().objects.create_user(name, f"{name}@example.com", "bench-password-1")
    key, raw = services.create_key(user, "bench")

    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = settings.AUTHENTICATION_BACKENDS[0]
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()

    factory = RequestFactory()
    total = n + WARMUP
    key_auth = APIKeyAuthentication()
    session_auth = SessionAuthentication()
    middleware = AuthenticationMiddleware(lambda r: HttpResponse())
    sessions = SessionMiddleware(lambda r: HttpResponse())

    def by_key(request) -> None:
        drf_request = Request(request, authenticators=[key_auth])
        assert drf_request.user.pk == user.pk and drf_request.auth == key

    def by_session(request) -> None:
        sessions.process_request(request)
        middleware.process_request(request)
        drf_request = Request(request, authenticators=[session_auth])
        assert drf_request.user.pk == user.pk

    def rejected(request) -> None:
        drf_request = Request(request, authenticators=[key_auth])
        try:
            drf_request.user  # noqa: B018  raises
        except Exception:
            return
        raise AssertionError("a key with a bad checksum was accepted")

    cookie = {settings.SESSION_COOKIE_NAME: session.session_key}
    session_requests = []
    for _ in range(total):
        request = factory.get("/api/v1/keys")
        request.COOKIES.update(cookie)
        session_requests.append(request)
    baseline = _timed(session_requests, by_session)

    bad = raw[:-1] + ("A" if raw[-1] != "A" else "B")
    runs = {
        "X-API-Key": [factory.get("/api/v1/keys", HTTP_X_API_KEY=raw) for _ in range(total)],
        "Authorization: Bearer": [
            factory.get("/api/v1/keys", HTTP_AUTHORIZATION=f"Bearer {raw}") for _ in range(total)
        ],
    }
    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    for header, requests in runs.items():
        timing = _timed(requests, by_key)
        print(
            json.dumps(
                {
                    "bench": "apikey_auth",
                    "header": header,
                    "requests": len(timing.samples),
                    "per_request_ms": round(timing.mean, 4),
                    "p95_ms": round(timing.p95, 4),
                    "cpu_ms": round(timing.cpu_ms, 4),
                    "baseline": "session_auth",
                    "baseline_ms": round(baseline.mean, 4),
                    "baseline_cpu_ms": round(baseline.cpu_ms, 4),
                    "ratio": round(timing.mean / baseline.mean, 3),
                    "goal_ms": 1.0,
                    "ok": timing.mean < 1.0,
                    "database": engine,
                    "loadavg_1m": round(os.getloadavg()[0], 2),
                }
            )
        )
    rejects = _timed([factory.get("/", HTTP_X_API_KEY=bad) for _ in range(total)], rejected)
    print(
        json.dumps(
            {
                "bench": "apikey_reject_bad_checksum",
                "requests": len(rejects.samples),
                "per_request_ms": round(rejects.mean, 4),
                "cpu_ms": round(rejects.cpu_ms, 4),
                "note": "rejected before any database query",
            }
        )
    )
    session.delete()
    user.delete()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
