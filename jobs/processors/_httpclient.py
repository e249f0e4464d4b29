"""What the network processors (llm, http, scrape) share: one pooled HTTP client per processor
instance, the mapping of HTTP answers and transport failures onto row errors and retries,
Retry-After parsing, dotted paths into JSON and column templates.

The client is urllib3 behind a small surface of its own (request, post, stream). At C = 32 rows
in flight the client's own CPU is what limits an I/O-bound job on a small machine: httpx spends
about twice urllib3's CPU per request (its request and response models, h11 in pure Python), and
an httpx client over a urllib3 transport keeps most of that. Every connection is opened through
jobs/ssrf.py, so rows cannot make a worker reach the operator's private network.
"""

from __future__ import annotations

import codecs
import functools
import json
import logging
import math
import os
import re
import socket
import ssl
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urljoin

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import (
    ConnectTimeoutError,
    DecodeError,
    HTTPError,
    LocationValueError,
    MaxRetryError,
    NewConnectionError,
    ResponseError,
)
from urllib3.exceptions import TimeoutError as UrllibTimeout
from urllib3.util import make_headers

from jobs import ssrf

from .base import ParamsError, RetryableError, RowError
from .template import template_fields

# urllib3 logs every redirect at INFO, with URLs whose query strings may carry tokens. Quiet it
# unless the operator configured that logger explicitly.
if logging.getLogger("urllib3").level == logging.NOTSET:
    logging.getLogger("urllib3").setLevel(logging.WARNING)

DEFAULT_USER_AGENT = "BatchHub/0.1 (+self-hosted batch processing)"
# A service asking for more than a day is treated as a day: the job pauses, it does not vanish.
MAX_RETRY_AFTER = 86_400.0
_CONNECTION_PREFIX = re.compile(r"^\w+\(host=.*?, port=\d+\): ")
# What is decoded: gzip and deflate always, brotli and zstd when their packages are installed.
_ACCEPT_ENCODING = make_headers(accept_encoding=True)["accept-encoding"]


class UnsafeAddress(NewConnectionError):
    """The host is (or resolves to) an address the processors may not reach."""


class _GuardedConnection(HTTPConnection):
    """Connects only to addresses jobs/ssrf.py allows, and to the very address it checked.

    urllib3 then speaks HTTP (and, below, TLS with the URL's host name for SNI and the
    certificate) over this socket, so only the socket's peer is decided here.
    """

    def _new_conn(self) -> socket.socket:
        timeout = self.timeout if isinstance(self.timeout, int | float) else None
        try:
            return ssrf.open_socket(
                self._dns_host, self.port, timeout, ssrf.PROCESSORS, self.socket_options
            )
        except ssrf.UnsafeURL as exc:
            raise UnsafeAddress(self, exc.messages[0]) from None
        except ssrf.UnresolvableHost as exc:
            raise NewConnectionError(self, str(exc)) from None
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, f"connecting to {self.host} timed out") from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc


class _GuardedHTTPSConnection(_GuardedConnection, HTTPSConnection):
    pass


class _GuardedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _GuardedConnection


class _GuardedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One verifying TLS context per process, shared by every client.

    Loading the CA bundle costs tens of milliseconds of CPU, and processors make a client per
    worker task. A context is safe to share between clients and threads.
    """
    return ssl.create_default_context()


class Response:
    """What the processors read of an answer: status, headers, final URL and the body."""

    def __init__(self, raw: urllib3.BaseHTTPResponse, url: str, *, streamed: bool):
        self._raw = raw
        self._streamed = streamed
        self.status_code: int = raw.status
        self.reason_phrase: str = raw.reason or ""
        self.headers = raw.headers  # case-insensitive
        self.url: str = _final_url(url, raw.retries)

    @property
    def content(self) -> bytes:
        return self._raw.data

    @property
    def charset_encoding(self) -> str | None:
        """The charset the Content-Type names, if Python knows it."""
        for part in self.headers.get("Content-Type", "").split(";")[1:]:
            name, _, value = part.partition("=")
            if name.strip().lower() == "charset":
                value = value.strip().strip("\"'")
                try:
                    return codecs.lookup(value).name
                except LookupError:
                    return None
        return None

    @property
    def text(self) -> str:
        if self._streamed:
            return ""  # never read a streamed body whole just to quote it
        return self.content.decode(self.charset_encoding or "utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)

    def iter_bytes(self, chunk_size: int = 65_536) -> Iterator[bytes]:
        """The body, decompressed, piece by piece (streamed answers)."""
        yield from self._raw.stream(chunk_size, decode_content=True)

    def close(self) -> None:
        if self._streamed:
            # The body may be unread (a page too large, a wrong type): close the connection
            # rather than read the rest to keep it.
            self._raw.close()
            self._raw.release_conn()


def _final_url(url: str, retries: urllib3.Retry | None) -> str:
    """The URL the answer came from: the request's, moved by each redirect followed."""
    for step in retries.history if retries else ():
        if step.redirect_location:
            url = urljoin(url, step.redirect_location)
    return url


class Client:
    """A thread-safe client whose pools hold as many connections as rows run at once.

    The engine calls ``run_one`` from ``concurrency`` threads; one shared client reuses
    keep-alive connections between rows instead of a TCP (and TLS) handshake per row.
    """

    def __init__(
        self,
        *,
        concurrency: int,
        timeout: float,
        follow_redirects: bool = False,
        max_redirects: int = 20,
        headers: Mapping[str, str] | None = None,
    ):
        size = max(1, int(concurrency))
        self.headers = {
            "User-Agent": DEFAULT_USER_AGENT,
            "Accept": "*/*",
            "Accept-Encoding": _ACCEPT_ENCODING,
            **(headers or {}),
        }
        # No retries here (the engine retries rows, with backoff); redirects only if asked for.
        # Authorization and cookies are dropped when a redirect leaves the host (urllib3's default).
        self._retries = urllib3.Retry(
            total=None,
            connect=0,
            read=0,
            status=0,
            other=0,
            redirect=max_redirects if follow_redirects else 0,
            raise_on_redirect=follow_redirects,
            raise_on_status=False,
        )
        self._follow = follow_redirects
        # No proxy and no netrc: urllib3 reads neither from the environment.
        self._pool = urllib3.PoolManager(
            num_pools=max(10, size),
            maxsize=size,
            block=False,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            ssl_context=_tls_context(),
        )
        # urllib3's documented way for a PoolManager to use other pool classes.
        self._pool.pool_classes_by_scheme = {"http": _GuardedHTTPPool, "https": _GuardedHTTPSPool}

    def _send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None,
        json_body: Any,
        stream: bool,
    ) -> Response:
        merged = {**self.headers, **(headers or {})}
        body = None
        if json_body is not None:
            try:
                body = json.dumps(
                    json_body, ensure_ascii=False, separators=(",", ":"), allow_nan=False
                ).encode()
            except ValueError as exc:  # NaN or infinity has no JSON spelling
                raise RowError(f"The body cannot be sent as JSON: {exc}") from None
            merged["Content-Type"] = "application/json"
        raw = self._pool.request(
            method,
            url,
            body=body,
            headers=merged,
            retries=self._retries,
            redirect=self._follow,
            preload_content=not stream,
        )
        return Response(raw, url, streamed=stream)

    def request(
        self, method: str, url: str, *, headers: Mapping[str, str] | None = None, json: Any = None
    ) -> Response:
        return self._send(method, url, headers=headers, json_body=json, stream=False)

    def post(self, url: str, *, json: Any = None) -> Response:
        return self._send("POST", url, headers=None, json_body=json, stream=False)

    @contextmanager
    def stream(self, method: str, url: str) -> Iterator[Response]:
        response = self._send(method, url, headers=None, json_body=None, stream=True)
        try:
            yield response
        finally:
            response.close()

    def close(self) -> None:
        self._pool.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def make_client(
    *,
    concurrency: int,
    timeout: float,
    follow_redirects: bool = False,
    max_redirects: int = 20,
    headers: Mapping[str, str] | None = None,
) -> Client:
    return Client(
        concurrency=concurrency,
        timeout=timeout,
        follow_redirects=follow_redirects,
        max_redirects=max_redirects,
        headers=headers,
    )


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date
    (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def check_response(response: Response, *, service: str) -> None:
    """Map a non-2xx answer: 429 slows the job down, 5xx is retried, another status fails
    the row."""
    status = response.status_code
    if 200 <= status < 300:
        return
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if status == 429:
        raise RetryableError(
            f"{service} answered 429 Too Many Requests" + _after(retry_after),
            retry_after=retry_after,
            rate_limited=True,
        )
    if status >= 500:
        message = f"{service} answered {status} {response.reason_phrase}".rstrip()
        raise RetryableError(message + _after(retry_after), retry_after=retry_after)
    message = f"{service} answered {status} {response.reason_phrase}".rstrip()
    raise RowError(message + _snippet(response))


def _after(retry_after: float | None) -> str:
    return f" (Retry-After {retry_after:g} s)" if retry_after is not None else ""


def _snippet(response: Response, limit: int = 200) -> str:
    text = response.text.strip()
    if not text:
        return ""
    text = " ".join(text.split())
    return ": " + (text[:limit] + "…" if len(text) > limit else text)


@contextmanager
def transport_errors(service: str) -> Iterator[None]:
    """Turn the client's failures into the engine's vocabulary.

    Timeouts and dropped connections are the other side's trouble and may pass: retry. A URL
    that cannot be requested at all, a private address, or a redirect loop will fail the same way
    every time: row error.
    """
    try:
        yield
    except HTTPError as exc:
        raise _mapped(exc, service) from None


def _mapped(exc: HTTPError, service: str) -> Exception:
    if isinstance(exc, MaxRetryError):
        if isinstance(exc.reason, ResponseError):  # the only retry left on: redirects
            return RowError(f"{service}: too many redirects")
        if exc.reason is not None:
            exc = exc.reason
    name = exc.__class__.__name__
    if isinstance(exc, UnsafeAddress):
        return RowError(f"{service}: {_message(exc)}")
    # urllib3's NewConnectionError is a ConnectTimeoutError (for history's sake): a refused
    # connection is not a timeout.
    if isinstance(exc, UrllibTimeout) and not isinstance(exc, NewConnectionError):
        return RetryableError(f"{service} timed out ({name})")
    if isinstance(exc, LocationValueError):  # no host, a bad port, an unknown scheme
        return RowError(f"{service}: the URL cannot be requested ({exc})")
    if isinstance(exc, DecodeError):
        return RowError(f"{service}: the answer could not be decoded ({_message(exc)})")
    return RetryableError(f"{service}: connection failed ({name}: {_message(exc)})")


def _message(exc: HTTPError) -> str:
    # urllib3 starts a connection's errors with the connection: "HTTPConnection(host=…, port=…): ".
    return _CONNECTION_PREFIX.sub("", str(exc), count=1)


def env_value(name: str, *, what: str) -> str:
    """A value from an environment variable on the worker; missing is a row error (fix, retry)."""
    value = os.environ.get(name)
    if not value:
        raise RowError(f"The environment variable {name} ({what}) is not set on the worker.")
    return value


_MISSING = object()


def dotted_get(data: Any, path: str) -> Any:
    """``data.items.0.name``: object keys by name, list items by index; None when absent."""
    current = data
    for part in path.split("."):
        if isinstance(current, Mapping):
            current = current.get(part, _MISSING)
        elif isinstance(current, list) and (
            part.isdigit() or (part.startswith("-") and part[1:].isdigit())
        ):
            index = int(part)
            current = current[index] if -len(current) <= index < len(current) else _MISSING
        else:
            current = _MISSING
        if current is _MISSING:
            return None
    return current


def cell(value: Any) -> Any:
    """An output cell: scalars as they are, objects and lists as compact JSON text."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def check_template(template: str, param: str) -> list[str]:
    """Column names in a template, with errors naming the param they came from."""
    try:
        return template_fields(template)
    except ParamsError as exc:
        raise ParamsError(str(exc).replace("params.template", f"params.{param}", 1)) from None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    # Numbers and booleans as JSON spells them (true, not True), objects as compact JSON.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def fill(template: str, values: Mapping[str, Any], *, url_encode: bool = False) -> str:
    """Fill a checked template with the row's columns (absent or empty cells become "")."""
    names = template_fields(template)
    missing = [name for name in names if name not in values]
    if missing:
        raise RowError(f"The row has no column {missing[0]!r} (used in a template).")
    filled = {
        name: quote(_text(values[name]), safe="") if url_encode else _text(values[name])
        for name in names
    }
    try:
        return template.format_map(filled)
    except (ValueError, TypeError) as exc:
        raise RowError(f"The template could not be filled: {exc}") from None


def json_template_strings(value: Any) -> Iterator[str]:
    """Every string inside a JSON value (keys included): each is a template."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from json_template_strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from json_template_strings(item)


def fill_json(value: Any, values: Mapping[str, Any]) -> Any:
    """A JSON body whose strings are templates. A string that is exactly one placeholder keeps the
    cell's own type (a number stays a number), so ``{"n": "{count}"}`` sends ``{"n": 3}``."""
    if isinstance(value, str):
        names = template_fields(value)
        if len(names) == 1 and value == "{" + names[0] + "}":
            if names[0] not in values:
                raise RowError(f"The row has no column {names[0]!r} (used in the body).")
            return values[names[0]]
        return fill(value, values)
    if isinstance(value, list):
        return [fill_json(item, values) for item in value]
    if isinstance(value, dict):
        return {fill(key, values): fill_json(item, values) for key, item in value.items()}
    return value

