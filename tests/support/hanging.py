"""A webhook receiver on 127.0.0.1 that takes each request and never answers it."""

from __future__ import annotations

import socket
import threading


class Hanging:
    """A receiver on 127.0.0.1 that reads each request and never answers; counts the
    attempts open at once (the sender closes its end at its timeout)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/hook"
        self.requests = 0
        self.open = self.most_open = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._hold, args=(conn,), daemon=True).start()

    def _hold(self, conn: socket.socket) -> None:
        with conn:
            try:
                if not conn.recv(65536):
                    return
            except OSError:
                return
            with self._lock:
                self.requests += 1
                self.open += 1
                self.most_open = max(self.most_open, self.open)
            try:
                while conn.recv(65536):  # until the sender gives up and closes its end
                    pass
            except OSError:
                pass
            with self._lock:
                self.open -= 1

    def close(self) -> None:
        self.server.close()
