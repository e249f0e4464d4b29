"""gunicorn serving batchhub.wsgi on loopback for end-to-end tests, with its worker's memory."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from .worker import ROOT, worker_env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebServer:
    """One sync gunicorn worker: a request's memory shows in that one process."""

    def __init__(self, log_dir: Path, **env: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log_dir / "gunicorn.log", "wb")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn", "batchhub.wsgi:application",
                "--bind", f"127.0.0.1:{self.port}", "--workers", "1",
                "--worker-class", "sync", "--timeout", "300",
            ],
            cwd=ROOT,
            env=worker_env(**env),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("gunicorn exited: " + (log_dir / "gunicorn.log").read_text())
            try:
                httpx.get(f"{self.url}/api/v1/processors", timeout=2)
                return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError("gunicorn did not answer in 60 s")

    def worker_pid(self) -> int:
        children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text()
        return int(children.split()[0])

    def reset_peak(self) -> int:
        """Reset the worker's peak RSS (VmHWM) to its RSS now, and return that RSS in KB."""
        pid = self.worker_pid()
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return self._status_kb(pid, "VmRSS")

    def peak_kb(self) -> int:
        return self._status_kb(self.worker_pid(), "VmHWM")

    @staticmethod
    def _status_kb(pid: int, field: str) -> int:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise LookupError(field)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
