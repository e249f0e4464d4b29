"""HTTP out of the workers: a pooled urllib3 client whose every connection obeys an SSRF policy.

The network processors (jobs/processors/_httpclient.py) and webhook deliveries (jobs/webhooks.py)
both call URLs that users typed, from inside the operator's network. Each connection this client
opens goes through jobs/ssrf.py's `open_socket` under the caller's policy: the host is resolved
once, every address checked, and the socket connects to the address checked (no DNS rebinding);
redirects open new connections, so they are checked too. urllib3 then speaks HTTP, and TLS with
the URL's host name for SNI and the certificate, over that socket.

Why urllib3: at 32 rows in flight the client's own CPU is what limits an I/O-bound job on a small
machine, and httpx spends about twice urllib3's CPU per request (its request and response
models, h11 in pure Python); an httpx client over a urllib3 transport keeps most of that. And
urllib3's connection class is meant to be subclassed, where httpx needs its private network
backend for the same check. No proxy and no netrc: urllib3 reads neither from the environment,
and a proxy would move the connection, and so the check, elsewhere.
"""

from __future__ import annotations

import codecs
import functools
import heapq
import itertools
import json
import re
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NamedTuple
from urllib.parse import urljoin

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
    ReadTimeoutError,
    ResponseError,
)
from urllib3.exceptions import TimeoutError as UrllibTimeout
from urllib3.util import make_headers

from batchhub import jsonsafe

from . import ssrf

DEFAULT_USER_AGENT = "BatchHub/0.1 (+self-hosted batch processing)"
# What is decoded: gzip and deflate always, brotli and zstd when their packages are installed.
_ACCEPT_ENCODING = make_headers(accept_encoding=True)["accept-encoding"]


# A request and its whole answer may take this many times the client's timeout (which bounds
# each wait for a byte): enough for a large page that keeps coming, not for one that never ends.
TOTAL_TIMEOUT_FACTOR = 4

_CONNECTION_PREFIX = re.compile(r"^\w+\(host=.*?, port=\d+\): ")


def error_text(exc: Exception) -> str:
    """An error's message without urllib3's "HTTPConnection(host=…, port=…): " in front."""
    return _CONNECTION_PREFIX.sub("", str(exc), count=1)


class _Refused(NewConnectionError):
    """No connection was tried, for a reason `text` gives in a user's words."""

    def __init__(self, conn: HTTPConnection, text: str):
        super().__init__(conn, text)
        self.text = text


class UnsafeAddress(_Refused):
    """The host is (or resolves to) an address the policy refuses."""


class Unresolvable(_Refused):
    """DNS gave no answer (maybe for now)."""


class Failure(NamedTuple):
    """What went wrong with a request, for its caller to word: one place that reads urllib3."""

    kind: str  # unsafe, unresolvable, timeout, redirects, bad_url, decode, connection
    text: str  # a user's words: the refusal, the exception's name, urllib3's message

    @property
    def permanent(self) -> bool:
        """The same request fails the same way again: no point retrying it."""
        return self.kind in ("unsafe", "redirects", "bad_url", "decode")


def failure(exc: HTTPError) -> Failure:
    """Classify what the client raised (it raises only urllib3's HTTPError family)."""
    if isinstance(exc, MaxRetryError):  # with retries off, the error wrapped in it is the news
        if isinstance(exc.reason, ResponseError):  # the only retry left on: redirects
            return Failure("redirects", "too many redirects")
        exc = exc.reason or exc
    name = type(exc).__name__
    if isinstance(exc, UnsafeAddress):
        return Failure("unsafe", exc.text)
    if isinstance(exc, Unresolvable):
        return Failure("unresolvable", exc.text)
    # urllib3's NewConnectionError is a ConnectTimeoutError (for history's sake): a refused
    # connection is not a timeout.
    if isinstance(exc, UrllibTimeout) and not isinstance(exc, NewConnectionError):
        return Failure("timeout", name)
    if isinstance(exc, LocationValueError):  # no host, a bad port, an unknown scheme
        return Failure("bad_url", str(exc))
    if isinstance(exc, DecodeError):
        return Failure("decode", error_text(exc))
    return Failure("connection", f"{name}: {error_text(exc)}")


class BodyError(ValueError):
    """The JSON body cannot be encoded (NaN or infinity has no JSON spelling)."""


class Deadline:
    """``with Deadline(seconds):`` cuts the connections this thread uses in the block once the
    time is up. A read timeout bounds each wait for a byte, not the answer: a peer sending one
    byte a second would hold the request for as long as it likes. Once cut, the read under way
    fails, and `expired` tells why.

    A connection belongs to the last request that used it: one given back to the keep-alive
    pool (after a redirect's hop, or a request that ended) and taken by another thread's request
    is that request's to cut, not this one's.
    """

    _current = threading.local()
    _owners: weakref.WeakKeyDictionary[socket.socket, Deadline] = weakref.WeakKeyDictionary()
    _owners_lock = threading.Lock()

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self.done = False
        self._sockets: list[socket.socket] = []
        self._outer: Deadline | None = None

    def __enter__(self) -> Deadline:
        self._outer = getattr(Deadline._current, "watch", None)
        Deadline._current.watch = self
        _watchdog.add(time.monotonic() + self.seconds, self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        with Deadline._owners_lock:
            self.done = True
            self._sockets.clear()
        Deadline._current.watch = self._outer
        _watchdog.ended()

    @classmethod
    def watch(cls, sock: socket.socket | None) -> None:
        deadline = getattr(cls._current, "watch", None)
        if deadline is None or sock is None:
            return
        with cls._owners_lock:
            cls._owners[sock] = deadline
            deadline._sockets.append(sock)
            if deadline.expired:
                _cut(sock)

    def expire(self) -> None:
        with Deadline._owners_lock:
            if self.done:
                return
            self.expired = True
            for sock in self._sockets:
                if Deadline._owners.get(sock) is self:
                    _cut(sock)


def _cut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # a read blocked in another thread returns at once
    except OSError:
        pass  # already closed


class _Watchdog:
    """One thread for every Deadline of the process: an I/O job starts hundreds of requests a
    second, and a timer thread each would cost more than the request's own client work."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._open = 0

    def ended(self) -> None:
        with self._wake:
            self._open -= 1

    def add(self, when: float, deadline: Deadline) -> None:
        with self._wake:
            self._open += 1
            # Requests mostly end in time and in order: the heap stays the size of those open.
            while self._heap and self._heap[0][2].done:
                heapq.heappop(self._heap)
            if len(self._heap) > 2 * self._open + 64:
                # One long request at the top keeps every later, ended one: drop them.
                self._heap = [entry for entry in self._heap if not entry[2].done]
                heapq.heapify(self._heap)
            heapq.heappush(self._heap, (when, next(self._order), deadline))
            if self._thread is None or not self._thread.is_alive():  # also after a fork
                self._thread = threading.Thread(target=self._run, name="deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is deadline:
                self._wake.notify()

    def _run(self) -> None:
        with self._wake:
            while True:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)  # ended in time
                if not self._heap:
                    self._wake.wait()
                    continue
                wait = self._heap[0][0] - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                heapq.heappop(self._heap)[2].expire()


_watchdog = _Watchdog()


class _GuardedConnection(HTTPConnection):
    policy: ssrf.Policy  # set on the per-policy subclasses made by _pool_classes

    def _new_conn(self) -> socket.socket:
        timeout = self.timeout if isinstance(self.timeout, int | float) else None
        try:
            sock = ssrf.open_socket(
                self._dns_host, self.port, timeout, self.policy, self.socket_options
            )
        except ssrf.UnsafeURL as exc:
            raise UnsafeAddress(self, exc.messages[0]) from None
        except ssrf.UnresolvableHost as exc:
            raise Unresolvable(self, str(exc)) from None
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, f"connecting to {self.host} timed out") from exc
        except OSError as exc:
            raise NewConnectionError(self, f"Failed to establish a new connection: {exc}") from exc
        Deadline.watch(sock)
        return sock

    def request(self, *args: Any, **kwargs: Any) -> None:
        Deadline.watch(self.sock)  # a connection reused from the pool (a new one: _new_conn)
        super().request(*args, **kwargs)


@functools.cache
def _pool_classes(policy: ssrf.Policy) -> dict[str, type[HTTPConnectionPool]]:
    """urllib3 pool classes whose connections obey `policy`, for http and https."""
    plain = type("GuardedConnection", (_GuardedConnection,), {"policy": policy})
    tls = type("GuardedHTTPSConnection", (plain, HTTPSConnection), {})
    return {
        "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": plain}),
        "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": tls}),
    }


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
        # Bounded: an answer nested thousands deep is a ValueError (a row error), not a crash.
        return jsonsafe.loads(self.content, replace_halves=True, unique_keys=False)

    def iter_bytes(self, chunk_size: int = 65_536) -> Iterator[bytes]:
        """The body, decompressed, piece by piece (streamed answers)."""
        yield from self._raw.stream(chunk_size, decode_content=True)

    def close(self) -> None:
        if self._streamed:
            # A body read to its end has already given its connection back to the pool
            # (tests/processors/test_network_guard.py); one left unread (a page too large, a
            # wrong type, a webhook receiver's answer) is closed rather than read to the end.
            self._raw.close()
            self._raw.release_conn()


def _final_url(url: str, retries: urllib3.Retry | None) -> str:
    """The URL the answer came from: the request's, moved by each redirect followed."""
    for step in retries.history if retries else ():
        if step.redirect_location:
            url = urljoin(url, step.redirect_location)
    return url


class Client:
    """A thread-safe client whose pools hold `concurrency` connections per host.

    The engine calls a processor's ``run_one`` from ``concurrency`` threads; one shared client
    reuses keep-alive connections between rows instead of a TCP (and TLS) handshake per row.
    """

    def __init__(
        self,
        *,
        policy: ssrf.Policy,
        concurrency: int,
        timeout: float,
        follow_redirects: bool = False,
        max_redirects: int = 20,
        headers: Mapping[str, str] | None = None,
        total_timeout: float | None = None,
    ):
        size = max(1, int(concurrency))
        # `timeout` bounds each wait for the other side; this, a whole request and its answer.
        self.total_timeout = total_timeout or TOTAL_TIMEOUT_FACTOR * timeout
        # Case-insensitive throughout: a caller's "user-agent" replaces the default rather than
        # going out beside it.
        self.headers = urllib3.HTTPHeaderDict(
            {"User-Agent": DEFAULT_USER_AGENT, "Accept": "*/*", "Accept-Encoding": _ACCEPT_ENCODING}
        )
        for name, value in (headers or {}).items():
            self.headers[name] = value
        # No retries here (callers retry with backoff); redirects only if asked for.
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
        self._pool = urllib3.PoolManager(
            num_pools=max(10, size),
            maxsize=size,
            block=False,
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            ssl_context=_tls_context(),
        )
        # urllib3's documented way for a PoolManager to use other pool classes.
        self._pool.pool_classes_by_scheme = _pool_classes(policy)

    def _send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None,
        json_body: Any,
        stream: bool,
        body: bytes | None = None,
    ) -> Response:
        merged = urllib3.HTTPHeaderDict(self.headers)
        for name, value in (headers or {}).items():
            merged[name] = value
        if json_body is not None:
            try:
                body = json.dumps(
                    json_body, ensure_ascii=False, separators=(",", ":"), allow_nan=False
                ).encode()
            except ValueError as exc:
                raise BodyError(f"The body cannot be sent as JSON: {exc}") from None
            if "Content-Type" not in merged:  # a caller's own (merge-patch+json…) stays
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

    @contextmanager
    def _deadline(self, url: str) -> Iterator[Deadline]:
        deadline = Deadline(self.total_timeout)
        try:
            with deadline:
                yield deadline
        except HTTPError as exc:
            if deadline.expired:
                raise self._overdue(url) from exc
            raise

    def _overdue(self, url: str) -> ReadTimeoutError:
        return ReadTimeoutError(None, url, f"no whole answer within {self.total_timeout:g} s")

    def _checked(self, deadline: Deadline, url: str, response: Response) -> Response:
        # A cut answer can look complete: http.client takes cut headers as their end, and a
        # body that runs to the connection's close as the whole body.
        if deadline.expired:
            response.close()
            raise self._overdue(url)
        return response

    def request(
        self, method: str, url: str, *, headers: Mapping[str, str] | None = None, json: Any = None
    ) -> Response:
        with self._deadline(url) as deadline:
            response = self._send(method, url, headers=headers, json_body=json, stream=False)
            return self._checked(deadline, url, response)

    def post(self, url: str, *, json: Any = None) -> Response:
        return self.request("POST", url, json=json)

    @contextmanager
    def stream(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes | None = None,
    ) -> Iterator[Response]:
        """The answer with its body unread: read it with iter_bytes(), as much as wanted, within
        the total timeout (past it, a read fails)."""
        with self._deadline(url) as deadline:
            sent = self._send(method, url, headers=headers, json_body=None, stream=True, body=body)
            response = self._checked(deadline, url, sent)
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
