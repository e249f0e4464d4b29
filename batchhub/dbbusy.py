"""A database that is busy or out of reach is a 503 with Retry-After, never a 500.

SQLite answers "database is locked" when a writer holds the lock past the busy timeout;
PostgreSQL drops connections when it restarts. Either way the request did nothing wrong and
can be repeated in a moment, so the client is told exactly that: the error envelope with
`database_busy` (a lock or a timeout) or `service_unavailable` (anything else the driver
raised) on API paths, a short plain page elsewhere.

Three places see such an error, depending on where it is raised:
- a DRF view: `batchhub.api.exception_handler` calls `api_response`;
- any other view: `DatabaseUnavailableMiddleware.process_exception`;
- a middleware (sessions, authentication) or anything else outside a view: `handler500`
  (Django calls it with the exception still being handled).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable

from django.db import (
    DEFAULT_DB_ALIAS,
    DatabaseError,
    InterfaceError,
    OperationalError,
    connections,
    transaction,
)
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger(__name__)

UNAVAILABLE = (OperationalError, InterfaceError)
RETRY_AFTER_SECONDS = 2
API_PREFIX = "/api/"
_BUSY_WORDS = ("locked", "busy", "timeout", "timed out", "lock")

HTML = (
    "<!doctype html><html lang=en><meta charset=utf-8><title>Busy, try again</title>"
    "<h1>The database is busy</h1><p>The server could not reach its database just now. "
    "Nothing was lost; reload this page in a few seconds.</p></html>"
)


def is_unavailable(exc: BaseException | None) -> bool:
    return isinstance(exc, UNAVAILABLE)


def error_code(exc: BaseException) -> str:
    text = str(exc).lower()
    return "database_busy" if any(word in text for word in _BUSY_WORDS) else "service_unavailable"


def _message(code: str) -> str:
    if code == "database_busy":
        return f"The database is busy; try again in {RETRY_AFTER_SECONDS} s."
    return f"The database is unavailable; try again in {RETRY_AFTER_SECONDS} s."


def api_body(exc: BaseException) -> dict:
    code = error_code(exc)
    return {"error": {"code": code, "message": _message(code), "details": None}}


def log_unavailable(request: HttpRequest | None, exc: BaseException) -> None:
    path = getattr(request, "path", "?")
    logger.warning("503 for %s: database unavailable (%s: %s)", path, type(exc).__name__, exc)


def response_for(request: HttpRequest, exc: BaseException) -> HttpResponse:
    """The 503 a client gets for `exc`: JSON envelope on API paths, a plain page elsewhere."""
    log_unavailable(request, exc)
    if request.path.startswith(API_PREFIX):
        response: HttpResponse = JsonResponse(api_body(exc), status=503)
    else:
        response = HttpResponse(HTML, status=503, content_type="text/html; charset=utf-8")
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response["Cache-Control"] = "no-store"
    return response


class DatabaseUnavailableMiddleware:
    """Turns a database error raised by a view into a 503 (see the module's docstring)."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if is_unavailable(exception):
            return response_for(request, exception)
        return None


def handler500(request: HttpRequest) -> HttpResponse:
    """Django's last resort: a 503 if the error being handled is the database's, else a 500."""
    exc = sys.exc_info()[1]
    if is_unavailable(exc):
        return response_for(request, exc)
    from django.views.defaults import server_error

    return server_error(request)


def try_write(write: Callable[[], object], *, using: str = DEFAULT_DB_ALIAS) -> bool:
    """Run a write that is nice to have (a "last used" stamp) only if it needs no waiting.

    On a busy database it is skipped at once instead of queueing behind the lock (SQLite's busy
    timeout is 0 for it), and any database error is swallowed: a request must never fail or slow
    down for it. Returns whether it was written.
    """
    connection = connections[using]
    try:
        if connection.in_atomic_block:
            # Inside a caller's transaction a failed statement must not poison it.
            with transaction.atomic(using=using):
                _write_without_waiting(connection, write)
        else:
            _write_without_waiting(connection, write)
        return True
    except DatabaseError as exc:
        logger.info("skipped a best-effort write: %s: %s", type(exc).__name__, exc)
        return False


def _write_without_waiting(connection, write: Callable[[], object]) -> None:
    if connection.vendor != "sqlite":
        # PostgreSQL locks rows, not the database: a one-row update waits only for another
        # writer of that very row, which is itself a one-row update.
        write()
        return
    connection.ensure_connection()
    raw = connection.connection
    waited_ms = int(float(connection.settings_dict["OPTIONS"].get("timeout", 5)) * 1000)
    # On the driver's connection: a setting of this connection, not a query worth logging.
    raw.execute("PRAGMA busy_timeout = 0")
    try:
        write()
    finally:
        with contextlib.suppress(Exception):  # a broken connection is the caller's to see
            raw.execute(f"PRAGMA busy_timeout = {waited_ms}")
