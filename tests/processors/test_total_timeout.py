"""The whole-answer deadline cuts its own request's connections, never another request's."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from jobs.processors import _httpclient


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: connections go back to the client's pool

    def do_GET(self):  # noqa: N802 (http.server's naming)
        port = self.server.server_address[1]
        try:
            if self.path == "/r":  # a hop to another host name: another pooled connection
                self.send_response(302)
                self.send_header("Location", f"http://localhost:{port}/slow")
                self.send_header("Content-Length", "0")
                self.end_headers()
            elif self.path == "/slow":
                self._drip(b"x" * 1000, every=0.2)  # never done within the deadline
            else:  # /b: a healthy answer that takes 1.5 s, its pieces well inside the timeout
                self._drip(b"b" * 5, every=0.3)
        except OSError:
            pass  # cut by the client

    def _drip(self, body: bytes, every: float) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for byte in body:
            time.sleep(every)
            self.wfile.write(bytes([byte]))
            self.wfile.flush()

    def log_message(self, *args):
        pass


@pytest.fixture
def site():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_request_past_its_deadline_does_not_cut_a_connection_another_request_reuses(site):
    # The redirect's first connection went back to the pool and served B; A's deadline, when it
    # passed, cut every socket A had touched, B's among them (ConnectionResetError).
    client = _httpclient.make_client(concurrency=1, timeout=0.5, follow_redirects=True)
    assert client.total_timeout == 2.0
    outcome: dict[str, object] = {}

    def a():
        try:
            with client.stream("GET", f"{site}/r") as response:
                for _ in response.iter_bytes(1):
                    pass
            outcome["a"] = "finished"
        except Exception as exc:  # noqa: BLE001 (what A ends with is what is looked at)
            outcome["a"] = type(exc).__name__

    first = threading.Thread(target=a)
    first.start()
    time.sleep(0.6)  # A is on its second host; its first connection waits in the pool
    started = time.monotonic()
    response = client.request("GET", f"{site}/b")  # in flight when A's 2 s are up
    took = time.monotonic() - started
    first.join(10)
    client.close()
    assert response.status_code == 200 and response.content == b"bbbbb"
    assert took < 2.0 and outcome["a"] == "ReadTimeoutError"


def test_ended_deadlines_behind_a_long_one_are_not_kept():
    from jobs import outbound

    with outbound.Deadline(120):  # one long request open all along
        for _ in range(5000):
            with outbound.Deadline(120):
                pass
        assert len(outbound._watchdog._heap) < 500
