"""`GET /healthz` and `GET /readyz`, for load balancers, orchestrators and operators.

/healthz is liveness: the process answers, and nothing else is touched. /readyz is readiness: a
database query, a cache write and read, and a broker connection, each with a short timeout
(BATCHHUB_READYZ_TIMEOUT); 200 with each check's result, or 503 naming the ones that failed.

A middleware first in the stack answers both, so they cost no session, CSRF, authentication or
rate limit, and need no ALLOWED_HOSTS entry: a balancer's probe names the node's own address,
not the site's, and these answers hold no link that a forged Host could poison. What failed is
answered by its exception's class only; the message (hosts, ports) goes to the log.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from django.conf import settings
from django.core.cache import caches
from django.db import DEFAULT_DB_ALIAS, connections
from django.http import HttpRequest, HttpResponse, JsonResponse

from .weblog import HEALTH_PROBE

logger = logging.getLogger(__name__)

LIVENESS = "/healthz"
READINESS = "/readyz"


class NotKept(Exception):
    """The cache took a value and did not give it back (a soft cache that is away)."""


def check_database() -> None:
    connection = connections[DEFAULT_DB_ALIAS]
    # What Django does around a request: a connection past its age or broken is replaced.
    connection.close_if_unusable_or_obsolete()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connection.close_if_unusable_or_obsolete()


def check_cache() -> None:
    # The cache answers a miss when it is away (batchhub/cache.py), so a value is written and
    # read back. One key per process: nodes sharing a Redis would otherwise race on it.
    cache = caches["default"]
    key = f"batchhub:readyz:{socket.gethostname()}:{os.getpid()}"
    token = secrets.token_hex(8)
    cache.set(key, token, timeout=60)
    if cache.get(key) != token:
        raise NotKept("the cache did not keep a value")


def check_broker() -> None:
    from .celery import app

    timeout = settings.BATCHHUB_READYZ_TIMEOUT
    # connect_timeout for amqp; Redis takes its timeouts from the transport options.
    options = {"socket_connect_timeout": timeout, "socket_timeout": timeout}
    with app.connection_for_write(connect_timeout=timeout, transport_options=options) as conn:
        conn.ensure_connection(max_retries=0)  # once: kombu would otherwise retry for ever


CHECKS: dict[str, Callable[[], None]] = {
    "database": check_database,
    "cache": check_cache,
    "broker": check_broker,
}

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_running: dict[str, Future] = {}


def _start(name: str) -> Future:
    """The check running for `name`, started now unless one still runs.

    A check that hangs past the timeout (a database that drops packets) is left to finish in its
    thread; the next probe waits on that one instead of starting another, so a dead dependency
    costs at most one thread per check, however often the balancer asks.
    """
    global _pool
    with _lock:
        if _pool is None:  # created at first use
            _pool = ThreadPoolExecutor(max_workers=len(CHECKS), thread_name_prefix="readyz")
        future = _running.get(name)
        if future is None or future.done():
            future = _pool.submit(lambda: CHECKS[name]())
            _running[name] = future
        return future


def stop() -> None:
    """End the checks' threads (a test that is done with them, before others fork)."""
    global _pool
    with _lock:
        pool, _pool = _pool, None
        _running.clear()
    if pool is not None:
        pool.shutdown(wait=True)


def _forget_after_fork() -> None:
    # A forked child has none of its parent's threads: a pool inherited would take work and never
    # run it. The next probe starts a pool of the child's own.
    global _lock, _pool, _running
    _lock, _pool, _running = threading.Lock(), None, {}


os.register_at_fork(after_in_child=_forget_after_fork)


def readiness() -> tuple[bool, dict[str, str]]:
    """Every check, run side by side, each "ok" or why not; True when all are ok."""
    timeout = settings.BATCHHUB_READYZ_TIMEOUT
    futures = {name: _start(name) for name in CHECKS}
    deadline = time.monotonic() + timeout
    results: dict[str, str] = {}
    for name, future in futures.items():
        try:
            future.result(timeout=max(0.0, deadline - time.monotonic()))
        except Exception as exc:
            if not future.done():
                results[name] = f"timed out after {timeout:g} s"
                logger.warning("readiness: %s did not answer within %g s", name, timeout)
            else:
                results[name] = f"failed: {exc.__class__.__name__}"
                logger.warning("readiness: %s failed: %r", name, exc)
        else:
            results[name] = "ok"
    return all(result == "ok" for result in results.values()), results


def _json(body: dict, status: int = 200) -> HttpResponse:
    response = JsonResponse(body, status=status)
    response["Cache-Control"] = "no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


class HealthMiddleware:
    """Answers /healthz and /readyz before anything else in the stack looks at the request."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if path.endswith("/") and len(path) > 1:
            path = path[:-1]
        if path not in (LIVENESS, READINESS):
            return self.get_response(request)
        if request.method not in ("GET", "HEAD"):
            response = _json({"status": "method_not_allowed"}, status=405)
            response["Allow"] = "GET, HEAD"
            return response
        # The access log sums the answered probes instead of a line each (batchhub/weblog.py).
        request.META[HEALTH_PROBE] = path
        if path == LIVENESS:
            return _json({"status": "ok"})
        ready, checks = readiness()
        if ready:
            return _json({"status": "ok", "checks": checks})
        failing = [name for name, result in checks.items() if result != "ok"]
        return _json({"status": "unavailable", "failing": failing, "checks": checks}, status=503)
