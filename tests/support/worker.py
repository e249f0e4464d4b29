"""Real celery worker processes for end-to-end tests, on the test database and a real broker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


def require_real_services() -> None:
    import pytest  # here, so that benchmarks can use Worker without pytest

    if connection.vendor != "postgresql":
        pytest.skip("end-to-end tests need PostgreSQL (DATABASE_URL); `make test` starts one")
    if not settings.CELERY_BROKER_URL.startswith("redis"):
        pytest.skip(
            "end-to-end tests need Redis as broker (CELERY_BROKER_URL); `make test` starts one"
        )


def flush_broker() -> None:
    import redis

    redis.Redis.from_url(settings.CELERY_BROKER_URL).flushdb()


def worker_env(**extra: str) -> dict[str, str]:
    db = connection.settings_dict
    env = dict(os.environ)
    env.update(
        {
            "DATABASE_URL": f"postgres://{db['USER']}:{db['PASSWORD']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "CACHE_URL": os.environ.get("CACHE_URL", ""),
            "BATCHHUB_LEASE_SECONDS": str(settings.BATCHHUB_LEASE_SECONDS),
            # Uploads are read by the worker from the storage the test process wrote them to.
            "MEDIA_ROOT": str(settings.MEDIA_ROOT),
            # The stand-ins for outside services (webhook receivers, APIs, sites) are on loopback.
            "BATCHHUB_WEBHOOK_ALLOW_PRIVATE": "127.0.0.0/8",
            "BATCHHUB_PROCESSOR_ALLOW_PRIVATE": "127.0.0.0/8",
            "BATCHHUB_PROCESSORS": "tests.support.fault_processors:CrashProcessor",
            # The real settings, not the suite's (pytest exports DJANGO_SETTINGS_MODULE).
            "DJANGO_SETTINGS_MODULE": "batchhub.settings",
            "BATCHHUB_TESTING": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


class Worker:
    """`celery -A batchhub worker` in its own process group, with its log in a file."""

    def __init__(
        self,
        log_dir: Path,
        *,
        concurrency: int = 2,
        name: str = "w1",
        beat: bool = False,
        extra_args: tuple[str, ...] = (),
        **env: str,
    ):
        self.log_path = log_dir / f"celery-{name}.log"
        self.name = name
        cmd = [
            sys.executable, "-m", "celery", "-A", "batchhub", "worker",
            "--loglevel=INFO", f"--concurrency={concurrency}", f"--hostname={name}@%h",
            f"--queues={settings.CELERY_TASK_DEFAULT_QUEUE}",
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            *extra_args,
        ]
        if beat:
            # The embedded beat runs the reaper, as `celery beat` does in production.
            cmd += ["--beat", f"--schedule={log_dir / f'beat-{name}'}"]
            env.setdefault("BATCHHUB_REAPER_INTERVAL", "1")
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=worker_env(**env),
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"celery worker exited: {self.tail()}")
            if b" ready." in self.log_path.read_bytes():
                return
            time.sleep(0.2)
        raise RuntimeError(f"celery worker not ready in {timeout}s: {self.tail()}")

    def children(self) -> list[int]:
        return children(self.proc.pid)

    def cpu_seconds(self) -> float:
        """CPU time used so far by the main process and the pool processes alive now."""
        return cpu_seconds([self.proc.pid, *self.children()])

    def wait_for(
        self, predicate, timeout: float = 600, interval: float = 0.05, message: str = "condition"
    ):
        """wait_for, giving up at once (with the log's tail) if the worker dies meanwhile."""

        def alive_and(predicate=predicate):
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker died while waiting for {message}: {self.tail()}")
            return predicate()

        try:
            return wait_for(alive_and, timeout, interval, message)
        except AssertionError as exc:
            raise AssertionError(f"{exc}: {self.tail()}") from None

    def peak_rss_mb(self) -> dict[str, object]:
        """VmHWM of the main process and of each pool child, in MB."""

        def hwm(pid: int) -> float:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
            except OSError:
                pass
            return 0.0

        return {"main": hwm(self.proc.pid), "children": [hwm(pid) for pid in self.children()]}

    def kill_child(self) -> int | None:
        """SIGKILL one pool process (the one doing the work); the main process replaces it."""
        kids = self.children()
        if not kids:
            return None
        os.kill(kids[0], signal.SIGKILL)
        return kids[0]

    def kill(self) -> None:
        """SIGKILL the whole worker: main process and pool, no goodbye."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
            except ProcessLookupError:
                pass
        self.log.close()

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def cpu_seconds(pids: list[int], *, reaped: bool = False) -> float:
    """User + system CPU seconds of these processes (Linux /proc); gone ones count nothing.

    With `reaped`, also the time of their children that have exited: the kernel adds it to the
    parent's cutime and cstime when the parent reaps them. That is how a PostgreSQL backend that
    ends within a measured window still counts (in its postmaster's), instead of vanishing.
    """
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime + stime
        if reaped:
            ticks += int(fields[13]) + int(fields[14])  # cutime + cstime
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_for(predicate, timeout: float = 120, interval: float = 0.2, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message}")
