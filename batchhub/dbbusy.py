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

import logging
import sys

from django.db import InterfaceError, OperationalError
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
