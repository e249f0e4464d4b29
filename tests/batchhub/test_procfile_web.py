"""The web process as the Procfile starts it: two sites on one machine do not share its files."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def web_command(bind: str) -> list[str]:
    line = next(
        line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:")
    )
    expanded = line.removeprefix("web:").replace("${BATCHHUB_BIND:-127.0.0.1:8000}", bind)
    expanded = expanded.replace("${WEB_CONCURRENCY:-2}", "1")
    args = shlex.split(expanded)
    assert args[0] == "gunicorn"
    return [str(Path(sys.executable).parent / "gunicorn"), *args[1:]]


def start_web(port: int, env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
    """The Procfile's web process on 127.0.0.1:`port`, in a session of its own (kill its group);
    its output to `log`, or nowhere."""
    out = log.open("wb") if log is not None else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            web_command(f"127.0.0.1:{port}"),
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        if log is not None:
            out.close()  # the process has its own copy


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serving(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_two_web_processes_run_side_by_side_without_a_shared_control_socket(tmp_path):
    # gunicorn's control socket is one per user (~/.gunicorn/gunicorn.ctl): a second `make run`
    # on the machine took it over from the first.
    env = {**os.environ, "HOME": str(tmp_path), "DJANGO_SETTINGS_MODULE": "batchhub.settings"}
    ports = [free_port(), free_port()]
    procs = [start_web(port, env) for port in ports]
    try:
        deadline = time.monotonic() + 60
        while not all(serving(p) for p in ports) and time.monotonic() < deadline:
            assert all(proc.poll() is None for proc in procs), "a web process exited"
            time.sleep(0.1)
        assert all(serving(p) for p in ports)
        assert not (tmp_path / ".gunicorn").exists()
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
