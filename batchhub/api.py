"""API plumbing shared by every app: the error body, pagination and rate limits.

Every error leaves the API as {"error": {"code", "message", "details"}} whatever raised it, so a
client needs one code path for failures.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import Http404
from rest_framework import exceptions, pagination, status, throttling
from rest_framework.response import Response

from . import dbbusy

logger = logging.getLogger(__name__)


class APIError(exceptions.APIException):
    """An error with a contract code and optional details."""

    status_code = status.HTTP_400_BAD_REQUEST
    error_code = "invalid_request"
    default_detail = "The request is not valid."

    def __init__(self, message: str | None = None, *, details: Any = None, code: str | None = None):
        super().__init__(message or self.default_detail)
        self.details = details
        if code:
            self.error_code = code


class InvalidCSV(APIError):
    error_code = "invalid_csv"
    default_detail = "The file could not be read as a table."


class InvalidState(APIError):
    status_code = status.HTTP_409_CONFLICT
    error_code = "invalid_state"
    default_detail = "The job is not in a state that allows this."


class Conflict(APIError):
    status_code = status.HTTP_409_CONFLICT
    error_code = "conflict"


class FileTooLarge(APIError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    error_code = "file_too_large"
    default_detail = "The upload is larger than the limit."


class QuotaExceeded(APIError):
    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    error_code = "quota_exceeded"
    default_detail = "A quota was exceeded."


_CODES: list[tuple[type[Exception], str]] = [
    (exceptions.NotAuthenticated, "not_authenticated"),
    (exceptions.AuthenticationFailed, "not_authenticated"),
    (exceptions.PermissionDenied, "permission_denied"),
    (exceptions.NotFound, "not_found"),
    (exceptions.MethodNotAllowed, "method_not_allowed"),
    (exceptions.NotAcceptable, "not_acceptable"),
    (exceptions.UnsupportedMediaType, "unsupported_media_type"),
    (exceptions.Throttled, "rate_limited"),
    (exceptions.ParseError, "invalid_request"),
    (exceptions.ValidationError, "invalid_request"),
]


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}


def _message_and_details(exc: exceptions.APIException) -> tuple[str, Any]:
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail
        if isinstance(detail, dict):
            first_field, first = next(iter(detail.items()), ("", ""))
            first = first[0] if isinstance(first, list) and first else first
            if first_field in ("non_field_errors", ""):
                message = str(first)
            else:
                message = f"{first_field}: {first}"
            return message, detail
        if isinstance(detail, list):
            return (str(detail[0]) if detail else "Invalid request."), {"non_field_errors": detail}
        return str(detail), None
    return str(exc.detail), None


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    # Imported here: rest_framework.views reads the throttle setting, which names this module.
    from rest_framework.views import exception_handler as drf_exception_handler

    if dbbusy.is_unavailable(exc):
        # A busy or unreachable database: the request may be repeated as it is (batchhub/dbbusy).
        dbbusy.log_unavailable(context.get("request"), exc)
        return Response(
            dbbusy.api_body(exc),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(dbbusy.RETRY_AFTER_SECONDS), "Cache-Control": "no-store"},
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound("Not found.")
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        # Django's own body limit (DATA_UPLOAD_MAX_MEMORY_SIZE): a 413 like the upload limit.
        exc = FileTooLarge("The request body is larger than the limit.")
    elif isinstance(exc, (TooManyFieldsSent, TooManyFilesSent)):
        exc = APIError(str(exc) or "The request has too many fields or files.")

    response = drf_exception_handler(exc, context)
    if response is None:
        # Unexpected: log the traceback for the operator, give the client a code and no internals.
        logger.exception("Unhandled API error", exc_info=exc)
        return Response(
            error_body("server_error", "An unexpected error occurred on the server."),
            status=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )

    if isinstance(exc, APIError):
        code, message, details = exc.error_code, str(exc.detail), exc.details
    else:
        code = next((c for cls, c in _CODES if isinstance(exc, cls)), "error")
        message, details = _message_and_details(exc)  # type: ignore[arg-type]
        if isinstance(exc, exceptions.NotFound):
            message = "Not found."
    if isinstance(exc, exceptions.Throttled) and exc.wait is not None:
        response["Retry-After"] = str(max(1, int(exc.wait + 0.999)))
        message = f"Too many requests; try again in {response['Retry-After']} s."
    if response.status_code == 401 and "WWW-Authenticate" not in response:
        response["WWW-Authenticate"] = 'Bearer realm="api"'
    response.data = error_body(code, message, details)
    return response


class LimitOffsetPagination(pagination.LimitOffsetPagination):
    default_limit = 50
    max_limit = 500
    # Far beyond any list, and small enough for every database's integer (a huge ?offset= would
    # otherwise overflow the query and end in a 500).
    max_offset = 2**53

    def get_offset(self, request) -> int:
        return min(super().get_offset(request), self.max_offset)


class GroupRateThrottle(throttling.SimpleRateThrottle):
    """One bucket per key (or per user for browser sessions) and endpoint group.

    A view names its group with `throttle_group`, or per action with `throttle_groups`; reads
    otherwise. Counts live in the shared cache so they hold across web processes.

    A sliding-window counter: the cache holds (window number, requests in it, requests in the
    window before), a constant-size value, and the requests of the last period are estimated as
    this window's plus the previous window's weighted by how much of it the last period still
    covers. So no burst of twice the rate gets through around a window's edge, as it would with
    plain fixed windows. DRF's own throttle keeps the time of every request in the period
    instead, so its read and write grow with the rate: at 1,000 requests a minute that list is
    8 KB, rewritten on every request.
    """

    def __init__(self) -> None:
        # The scope (hence the rate) depends on the view, so allow_request reads it;
        # SimpleRateThrottle.__init__ would demand a class-level scope and fail.
        self.wait_seconds: float | None = None

    def get_scope(self, request, view) -> str:
        groups = getattr(view, "throttle_groups", {}) or {}
        action = getattr(view, "action", None)
        if action in groups:
            return groups[action]
        return getattr(view, "throttle_group", "read")

    def allow_request(self, request, view) -> bool:
        self.scope = self.get_scope(request, view)
        self.rate = self.get_rate()
        self.num_requests, self.duration = self.parse_rate(self.rate)
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        now = self.timer()
        limit, period = self.num_requests, self.duration
        window, into = divmod(now, period)
        stored, count, before = self.cache.get(self.key) or (window, 0, 0)
        if stored != window:
            # A new window: the one that just ended becomes "before" (older ones count nothing).
            count, before = 0, (count if stored == window - 1 else 0)
        used = before * (1 - into / period) + count
        if used + 1 > limit:
            self.wait_seconds = self._wait(count, before, into, period, limit)
            return False
        # Read then write, as DRF's throttle does: two requests at the same instant may be
        # counted once, which a limit meant to stop runaway scripts can live with.
        self.cache.set(self.key, (window, count + 1, before), math.ceil(2 * period - into))
        return True

    @staticmethod
    def _wait(count: int, before: int, into: float, period: float, limit: int) -> float:
        """Seconds until one more request fits, as the previous window's weight runs down."""
        if count + 1 <= limit and before:
            # Within this window: before * (1 - t / period) + count + 1 <= limit.
            return max(0.0, (1 - (limit - count - 1) / before) * period - into)
        # In the next window, this one's count is the weighted one.
        if not count:
            return period - into
        return (period - into) + max(0.0, 1 - (limit - 1) / count) * period

    def wait(self) -> float | None:
        return self.wait_seconds

    def get_cache_key(self, request, view) -> str | None:
        auth = getattr(request, "auth", None)
        key_id = getattr(auth, "pk", None)
        if key_id is not None:
            ident = f"key:{key_id}"
        elif request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"ip:{self.get_ident(request)}"
        # Not DRF's "throttle:" prefix: those keys held lists of times, not counts.
        return f"rate:{self.scope}:{ident}"
