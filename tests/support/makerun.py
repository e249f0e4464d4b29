"""`make run` as a user starts it: the embedded default (SQLite, filesystem broker) under honcho."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
ADMIN, PASSWORD = "boss", "a long test password"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MakeRun:
    """Start (and restart) `make run` on a data folder; stop it with SIGTERM, as Ctrl-C does."""

    def __init__(self, tmp_path: Path, **env: str):
        self.tmp_path = tmp_path
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp_path / "make-run.log"
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL", "DJANGO_SETTINGS_MODULE")
        }
        self.env.update(
            {
                "PORT": str(self.port),
                "BATCHHUB_DATA_DIR": str(tmp_path / "var"),
                "BATCHHUB_ADMIN_USER": ADMIN,
                "BATCHHUB_ADMIN_PASSWORD": PASSWORD,
                "MEDIA_ROOT": str(tmp_path / "var" / "media"),
                # Shared: `make run` collects static files only when they changed, as on a
                # user's second start; the first start in a checkout collects them.
                "STATIC_ROOT": str(ROOT / "var" / "test-static"),
                **env,
            }
        )
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self, timeout: float = 120) -> None:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            ["make", "--no-print-directory", "run"],
            cwd=ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()
            try:
                if httpx.get(f"{self.base}/accounts/login/", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise AssertionError("make run did not serve the site: " + self.log()[-3000:])

    def stop(self, timeout: float = 90, sig: signal.Signals = signal.SIGTERM) -> None:
        """SIGTERM, what Ctrl-C does: honcho stops web, worker and beat (the worker's running
        tasks end first: batchhub/runall.py). SIGHUP is a closed terminal."""
        if self.proc is None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            raise AssertionError(f"make run did not stop on {sig.name}") from None
        finally:
            self._log.close()
            self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def login(self) -> httpx.Client:
        """A browser-like client logged in as the admin, with the CSRF headers the API wants."""
        web = httpx.Client(base_url=self.base, timeout=30, follow_redirects=True)
        page = web.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        home = web.post(
            "/accounts/login/",
            data={"username": ADMIN, "password": PASSWORD, "csrfmiddlewaretoken": token},
        )
        assert home.status_code == 200 and home.url.path == "/", home.text[:500]
        web.headers.update({"X-CSRFToken": web.cookies["csrftoken"], "Referer": self.base + "/"})
        return web
