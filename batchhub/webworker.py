"""The web's gunicorn worker (`--worker-class batchhub.webworker.ThreadWorker`): gthread, with a
limit on how long a client may take to send its request.

gthread gives a request a thread from its first byte until its body has been read, however long
the client takes. A client that sent its headers and part of a body and then nothing held a
thread until it hung up, and as many such clients as there are threads left every page, the API
and the health checks unanswered. With `BATCHHUB_CLIENT_IDLE_SECONDS`:

- the request line and headers must arrive within that many seconds of a thread taking the
  connection: the main loop, which closes expired kept-alive connections once a second, shuts
  the late ones down, which ends the thread's read at once (a byte a second does not keep it);
- while the body is read, a read that gets no byte for that long gives up (`SO_RCVTIMEO`: the
  kernel's limit survives gunicorn switching the socket to blocking, which clears Python's own
  timeout). The application sees `RequestTimeout` (batchhub/api.py: a 408 from the API, a 400
  from a page) as it would an invalid body, so nothing half-received is kept. The limit is on
  the gap between bytes, never on the total: a slow upload whose bytes keep coming goes through.
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time

from gunicorn.workers import gthread


def set_read_timeout(sock: socket.socket, seconds: float) -> None:
    """Blocking reads on `sock` fail with EAGAIN after `seconds` without data (0: never)."""
    whole = int(seconds)
    sock.setsockopt(
        socket.SOL_SOCKET,
        socket.SO_RCVTIMEO,
        struct.pack("ll", whole, int((seconds - whole) * 1_000_000)),
    )


class _Body:
    """wsgi.input whose read that timed out ends the request with `RequestTimeout`."""

    def __init__(self, stream, environ: dict, idle_seconds: float):
        self.stream = stream
        self.environ = environ
        self.idle_seconds = idle_seconds

    def read(self, size: int = -1) -> bytes:
        return self._guarded(self.stream.read, size)

    def readline(self, size: int = -1) -> bytes:
        return self._guarded(self.stream.readline, size)

    def readlines(self, hint: int = -1) -> list[bytes]:
        return self._guarded(self.stream.readlines, hint)

    def __iter__(self):
        return iter(self.readline, b"")

    def _guarded(self, method, *args):
        try:
            return method(*args)
        except (BlockingIOError, TimeoutError, ssl.SSLWantReadError) as exc:
            # BlockingIOError is SO_RCVTIMEO's EAGAIN on a blocking socket (SSLWantReadError
            # when gunicorn itself speaks TLS). Django would wrap an
            # OSError as UnreadablePostError, which the CSRF check swallows before the view reads
            # on and waits the whole limit again; a RequestTimeout stops every reader.
            self._stop_reading()
            from batchhub.api import RequestTimeout

            raise RequestTimeout(idle_seconds=self.idle_seconds) from exc

    def _stop_reading(self) -> None:
        # gunicorn lingers up to 2 s on its main thread for the client's end before closing a
        # connection; a client that stopped sending would never give it.
        sock = self.environ.get("gunicorn.socket")
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RD)
            except OSError:
                pass


class _BodyGuard:
    def __init__(self, app, idle_seconds: float):
        self.app = app
        self.idle_seconds = idle_seconds

    def __call__(self, environ, start_response):
        environ["wsgi.input"] = _Body(environ["wsgi.input"], environ, self.idle_seconds)
        return self.app(environ, start_response)


class ThreadWorker(gthread.ThreadWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.idle_seconds = 0.0
        # Connections whose request line and headers are being read, with their deadline.
        self._reading_headers: dict[gthread.TConn, float] = {}
        self._headers_lock = threading.Lock()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        # Read once the application has loaded the settings (a bad value stops start-up there).
        from django.conf import settings

        self.idle_seconds = settings.BATCHHUB_CLIENT_IDLE_SECONDS
        self.wsgi = _BodyGuard(self.wsgi, self.idle_seconds)

    def handle(self, conn):
        # The headers' time counts in whole (below); a read limit left from the connection's
        # last request would fail a read inside gunicorn's parser instead.
        set_read_timeout(conn.sock, 0)
        with self._headers_lock:
            self._reading_headers[conn] = time.monotonic() + self.idle_seconds
        try:
            return super().handle(conn)
        finally:
            with self._headers_lock:
                self._reading_headers.pop(conn, None)

    def handle_request(self, req, conn):
        with self._headers_lock:
            self._reading_headers.pop(conn, None)
        set_read_timeout(conn.sock, self.idle_seconds)
        return super().handle_request(req, conn)

    def murder_pending(self) -> None:
        super().murder_pending()
        now = time.monotonic()
        # Under the lock: a thread that has just read a late connection's headers takes it out
        # of the list under the same lock (handle_request), so its request is never cut.
        with self._headers_lock:
            late = [c for c, deadline in self._reading_headers.items() if deadline <= now]
            for conn in late:
                del self._reading_headers[conn]
                if conn.is_http2:
                    continue  # a long-lived connection of many streams, not a request's headers
                try:
                    conn.sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
