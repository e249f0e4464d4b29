"""The web worker's body guard: a read that timed out ends the request as a 408, and closing
the connection does not wait on its client. End to end, with the real gunicorn:
tests/e2e/test_slow_clients.py."""

from __future__ import annotations

import logging
import socket
import ssl
import sys
import time

import pytest

from batchhub.api import OneLineForStalledClients, RequestTimeout, exception_handler
from batchhub.webworker import _Body, set_read_timeout


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """The server's and the client's ends of a loopback TCP connection."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    return server, client


class TimingOut:
    """A wsgi.input whose next read fails as a socket read limit makes it fail."""

    def __init__(self, error: OSError):
        self.error = error

    def read(self, size=-1):
        raise self.error

    readline = read


@pytest.mark.parametrize(
    "error",
    # The kernel's read limit on a plain socket, on a TLS one (gunicorn speaking TLS), Python's.
    [BlockingIOError(11, "timed out"), ssl.SSLWantReadError(), TimeoutError()],
)
def test_a_read_that_timed_out_raises_request_timeout_and_stops_reading_the_client(error):
    server, client = tcp_pair()
    with server, client:
        body = _Body(TimingOut(error), {"gunicorn.socket": server}, idle_seconds=15)
        with pytest.raises(RequestTimeout) as raised:
            body.read(1024)
        # gunicorn's close, which waits up to 2 s for the client's end, finds it at once.
        server.settimeout(5)
        started = time.monotonic()
        assert server.recv(100) == b""
        assert time.monotonic() - started < 1
    response = exception_handler(raised.value, {})
    assert response.status_code == 408
    assert response.data["error"]["code"] == "request_timeout"
    assert response.data["error"]["details"] == {"idle_seconds": 15}


def test_reads_that_get_their_bytes_pass_through():
    server, client = socket.socketpair()
    with server, client:
        client.sendall(b"name\nann\n")
        stream = server.makefile("rb")
        body = _Body(stream, {}, idle_seconds=15)
        assert body.readline() == b"name\n"
        assert body.read(4) == b"ann\n"


@pytest.mark.skipif(sys.platform != "linux", reason="SO_RCVTIMEO's EAGAIN as Linux reports it")
def test_the_read_limit_holds_on_a_blocking_socket():
    server, client = tcp_pair()
    with server, client:
        server.setblocking(True)  # what gunicorn does, clearing Python's own timeout
        set_read_timeout(server, 0.2)
        started = time.monotonic()
        with pytest.raises(BlockingIOError):
            server.recv(10)
        assert 0.15 < time.monotonic() - started < 2


def test_a_stalled_client_is_one_log_line_without_a_traceback():
    try:
        raise RequestTimeout(idle_seconds=15)
    except RequestTimeout:
        record = logging.LogRecord(
            "django.request", logging.WARNING, __file__, 1, "stalled", None, sys.exc_info()
        )
    assert OneLineForStalledClients().filter(record)
    assert record.exc_info is None
    try:
        raise ValueError("a bug")
    except ValueError:
        other = logging.LogRecord(
            "django.request", logging.ERROR, __file__, 1, "bug", None, sys.exc_info()
        )
    OneLineForStalledClients().filter(other)
    assert other.exc_info is not None
