"""A peer on 127.0.0.1 that answers a byte at a time, forever: a per-read timeout never fires."""

from __future__ import annotations

import socket
import threading
import time


class Dripping:
    """A receiver on 127.0.0.1 that answers `head`, then `drip` one byte at a time, forever."""

    def __init__(self, head: bytes, drip: bytes = b"x" * 400, every: float = 0.2):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}/hook"
        self.head, self.drip, self.every = head, drip, every
        self.requests = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.requests += 1
            with conn:
                conn.recv(65536)
                try:
                    conn.sendall(self.head)
                    for byte in self.drip:
                        time.sleep(self.every)
                        conn.sendall(bytes([byte]))
                except OSError:
                    pass  # the sender cut it

    def close(self) -> None:
        self.server.close()
