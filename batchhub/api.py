"""API plumbing shared by every app: the error body, pagination and rate limits.

Every error leaves the API as {"error": {"code", "message", "details"}} whatever raised it, so a
client needs one code path for failures.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import (
    BadRequest,
    RequestDataTooBig,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.http import Http404
from rest_framework import exceptions, pagination, status, throttling
from rest_framework.response import Response

from . import dbbusy, sliding_window

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


class LengthRequired(APIError):
    status_code = status.HTTP_411_LENGTH_REQUIRED
    error_code = "length_required"
    default_detail = "Send the body with a Content-Length header (chunked uploads are not read)."


class UnsupportedContentEncoding(APIError):
    """A request body compressed as a whole (Content-Encoding): no parser here unpacks it, so
    read as it is it looked like broken text, or like a form missing every field."""

    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
    error_code = "unsupported_media_type"

    def __init__(self, coding: str):
        shown = coding[:40]
        super().__init__(
            f"The body is sent with Content-Encoding: {shown}, which is not read here; send it "
            "uncompressed. A gzip-compressed file goes in as the file itself (its bytes show it "
            "is gzip).",
            details={"content_encoding": shown},
        )


class UnsupportedCharset(APIError):
    """A Content-Type charset that names a codec but not a text encoding (zlib, base64, an
    escape codec): decoding with it unpacked or rewrote the body instead of reading it."""

    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
    error_code = "unsupported_media_type"

    def __init__(self, charset: str):
        from .charset import refusal

        super().__init__(refusal(charset), details={"charset": charset[:40]})


class RequestTimeout(APIError, BadRequest):
    """The client stopped sending its request body (batchhub/webworker.py). Also Django's
    BadRequest, so that a page's view that was reading the body answers 400, not 500."""

    status_code = status.HTTP_408_REQUEST_TIMEOUT
    error_code = "request_timeout"

    def __init__(self, *, idle_seconds: float):
        super().__init__(
            f"No part of the request body arrived for {idle_seconds:g} s; send it again.",
            details={"idle_seconds": idle_seconds},
        )


class OneLineForStalledClients(logging.Filter):
    """Django logs a page's BadRequest with its traceback; a client that stopped sending is not
    the server's fault, and one line each keeps a slow-loris from burying the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], RequestTimeout):
            record.exc_info = None
            record.exc_text = None
        return True


def raise_if_chunked(meta: dict[str, Any]) -> None:
    """Django reads a WSGI body only as far as its declared length: a chunked one (no
    Content-Length) reads as empty, which would be answered as if nothing had been sent."""
    if (
        not (meta.get("CONTENT_LENGTH") or "").strip().isdigit()
        and "chunked" in (meta.get("HTTP_TRANSFER_ENCODING") or "").lower()
    ):
        raise LengthRequired()


def raise_if_cut_short(request) -> None:
    """A body read to its end that came short of its Content-Length: the sender stopped (a
    dropped connection reads as the end of the body). Call only once the body was read to its
    end: the parsers do (a multipart parse reads to the end, the JSON one reads all first).

    Without this a cut multipart body was answered "No file was submitted" (its file part
    never closed), or its fields as if the file had not been sent."""
    declared = (getattr(request, "META", {}).get("CONTENT_LENGTH") or "").strip()
    body = getattr(request, "_body", None)  # read whole as request.body (DRF, for JSON)
    if body is not None:
        received = len(body)
    else:  # read as a stream, counted by Django's LimitedStream
        received = getattr(getattr(request, "_stream", None), "_pos", None)
    if not declared.isdigit() or not isinstance(received, int) or received >= int(declared):
        return
    declared = int(declared)
    raise APIError(
        f"The request body ended after {received:,} of the {declared:,} bytes its "
        "Content-Length declared: it was cut short, and nothing was made of it. Send it again.",
        details={"body": ["shorter than its Content-Length"]},
    )


class QuotaExceeded(APIError):
    """A limit that frees up with time (active jobs): a 429 with the seconds to wait."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    error_code = "quota_exceeded"
    default_detail = "A quota was exceeded."

    def __init__(self, message: str | None = None, *, retry_after: int, details: Any = None):
        super().__init__(message, details=details)
        self.retry_after = max(1, int(retry_after))


class TooManyRows(APIError):
    """The input has more rows than a job may hold: sending it again will not help, so no 429."""

    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    error_code = "too_many_rows"
    default_detail = "The input has more rows than a job may hold."


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


def _first_error(detail: Any) -> tuple[str, str]:
    """The first message in nested serializer errors and where it is ("rows[3]", "a.b")."""
    where = ""
    while isinstance(detail, (dict, list)) and detail:
        if isinstance(detail, dict):
            key, detail = next(iter(detail.items()))
            if key == "non_field_errors":
                continue
            where += (
                f"[{key}]"
                if isinstance(key, int) or str(key).isdigit()
                else (f".{key}" if where else str(key))
            )
        else:
            detail = detail[0]
    return where, str(detail) if detail not in ({}, []) else ""


def _message_and_details(exc: exceptions.APIException) -> tuple[str, Any]:
    if isinstance(exc, exceptions.ValidationError):
        detail = exc.detail
        if isinstance(detail, dict):
            where, first = _first_error(detail)
            message = f"{where}: {first}" if where else first
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
    if isinstance(exc, QuotaExceeded):
        response["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, UnsupportedContentEncoding):
        response["Accept-Encoding"] = "identity"  # RFC 9110: the codings a request may use
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

    def get_limit(self, request) -> int:
        given = self._given(request, self.limit_query_param, minimum=1)
        return self.default_limit if given is None else min(given, self.max_limit)

    def get_offset(self, request) -> int:
        given = self._given(request, self.offset_query_param, minimum=0)
        return 0 if given is None else min(given, self.max_offset)

    @staticmethod
    def _given(request, name: str, *, minimum: int) -> int | None:
        # DRF reads `?limit=abc`, `0` or `-1` as the default and `?offset=-5` as 0: a script with
        # a bug then pages through something else than it asked for, without a word.
        text = request.query_params.get(name)
        if text is None or text == "":
            return None
        value = int(text) if text.isascii() and text.isdigit() else None
        if value is None or value < minimum:
            raise APIError(
                f"'{name}' must be a whole number of at least {minimum}, not {text[:40]!r}.",
                details={name: text[:40]},
            )
        return value


class GroupRateThrottle(throttling.SimpleRateThrottle):
    """One bucket per key (or per user for browser sessions) and endpoint group.

    A view names its group with `throttle_group`, or per action with `throttle_groups`; reads
    otherwise. Counts live in the shared cache so they hold across web processes.

    A sliding-window counter checked and counted atomically (see sliding_window). DRF's own
    throttle keeps the time of every request in the period instead, so its read and write grow
    with the rate (at 1,000 requests a minute that list is 8 KB, rewritten on every request),
    and it reads then writes, so concurrent requests all pass.
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
        counted = getattr(request, "rate_counted", None)
        if counted is not None and counted[0] == self.key:
            # Counted already, by the script that read the rest of the request (jobs/poll.py).
            request.rate_counted = None
            outcome = counted[1]
        else:
            outcome = sliding_window.hit(self.cache, self.key, limit, period, now)
        if not outcome.allowed:
            self.wait_seconds = sliding_window.wait_seconds(outcome, limit, period, now)
        return outcome.allowed

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
