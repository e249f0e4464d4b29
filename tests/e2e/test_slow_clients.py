"""Clients that stop sending their request do not take the site down: the web as the Procfile
starts it closes them after BATCHHUB_CLIENT_IDLE_SECONDS, keeps nothing they half-sent, and still
takes a slow upload whose bytes keep coming."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time

import httpx
import pytest

from apikeys.services import create_key
from jobs.models import Job, Upload
from tests.batchhub.test_procfile_web import free_port, start_web
from tests.conftest import PASSWORD
from tests.support.worker import require_real_services, wait_for, worker_env

pytestmark = pytest.mark.e2e

IDLE = 2  # seconds: BATCHHUB_CLIENT_IDLE_SECONDS for the server under test
THREADS = 4  # the Procfile's --threads, one web process


@pytest.fixture
def site(transactional_db, settings, tmp_path):
    require_real_services()
    port = free_port()
    media, tmp = tmp_path / "media", tmp_path / "tmp"
    tmp.mkdir()
    env = worker_env(
        BATCHHUB_CLIENT_IDLE_SECONDS=str(IDLE),
        MEDIA_ROOT=str(media),
        TMPDIR=str(tmp),  # where Django spools an upload's file part
        SECRET_KEY=settings.SECRET_KEY,
        HOME=str(tmp_path),
    )
    proc = start_web(port, env, tmp_path / "web.log")
    base = f"http://127.0.0.1:{port}"

    def up():
        assert proc.poll() is None, (tmp_path / "web.log").read_text()
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(up, timeout=60, message="the web process")
    yield {"base": base, "port": port, "media": media, "tmp": tmp}
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(30)


def multipart(boundary: str, fields: dict[str, str], file: bytes) -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="in.csv"\r\n'
        "Content-Type: text/csv\r\n\r\n".encode()
        + file
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return b"".join(parts)


def request_head(method: str, path: str, body: bytes, *headers: str, boundary: str = "") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    if boundary:
        lines.append(f"Content-Type: multipart/form-data; boundary={boundary}")
    return ("\r\n".join([*lines, *headers]) + "\r\n\r\n").encode()


def stalled(port: int, head: bytes, body: bytes, sent: int) -> socket.socket:
    """Headers and the first `sent` bytes of the body, then nothing, the connection kept open."""
    conn = socket.create_connection(("127.0.0.1", port))
    conn.sendall(head + body[:sent])
    return conn


def answer(conn: socket.socket, timeout: float) -> tuple[bytes, bool]:
    """What the server wrote, and whether it closed the connection within `timeout`."""
    conn.settimeout(timeout)
    data = b""
    try:
        while chunk := conn.recv(65536):
            data += chunk
    except TimeoutError:
        return data, False
    except ConnectionResetError:
        pass
    return data, True


def trickling_headers(port: int, stop: threading.Event) -> socket.socket:
    """A slow loris: a header byte every half second, each well within the idle limit."""
    conn = socket.create_connection(("127.0.0.1", port))
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")

    def drip():
        while not stop.wait(0.5):
            try:
                conn.sendall(b"x")
            except OSError:
                return

    threading.Thread(target=drip, daemon=True).start()
    return conn


def test_stalled_clients_are_closed_and_the_site_keeps_answering(site, alice, settings):
    # The server checks passwords with the production hashers, not the suite's quick one.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher"]
    alice.set_password(PASSWORD)
    alice.save()
    port, base = site["port"], site["base"]
    _key, raw_key = create_key(alice, "e2e")
    key = f"X-API-Key: {raw_key}"
    fields = {"processor": "template", "params": json.dumps({"template": "{name}!"})}
    # Over Django's in-memory size: the file part is spooled to a temporary file.
    big = b"name\n" + b"someone\n" * 500_000
    boundary = "b0undary"
    create_body = multipart(boundary, fields, big)

    upload = httpx.post(f"{base}/api/v1/uploads", headers={"X-API-Key": raw_key}, json={}).json()
    upload_path = upload["upload_url"].removeprefix(base)

    web = httpx.Client(base_url=base, timeout=10, follow_redirects=True)
    page = web.get("/accounts/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    home = web.post(
        "/accounts/login/",
        data={"username": "alice", "password": PASSWORD, "csrfmiddlewaretoken": token},
    )
    assert home.url.path == "/", home.text[:500]
    cookies = "; ".join(f"{name}={value}" for name, value in web.cookies.items())
    page_body = multipart(boundary, {"csrfmiddlewaretoken": web.cookies["csrftoken"]}, big)

    stop = threading.Event()
    started = time.monotonic()
    body_stalls = {
        "api create": [
            stalled(
                port,
                request_head("POST", "/api/v1/jobs", create_body, key, boundary=boundary),
                create_body,
                20_000,
            )
            for _ in range(2)
        ],
        "upload PUT": [
            stalled(port, request_head("PUT", upload_path, big), big, 20_000) for _ in range(2)
        ],
        "page upload": [
            stalled(
                port,
                request_head(
                    "POST", "/jobs/new/", page_body, f"Cookie: {cookies}", boundary=boundary
                ),
                page_body,
                20_000,
            )
            for _ in range(2)
        ],
    }
    lorises = [trickling_headers(port, stop) for _ in range(2)]
    try:
        assert sum(map(len, body_stalls.values())) + len(lorises) > THREADS
        # Every thread is taken by a stalled client, and their successors wait behind them: the
        # probe is answered once the idle limit has freed them, twice over at most.
        probe = httpx.get(f"{base}/healthz", timeout=15)
        waited = time.monotonic() - started
        assert probe.status_code == 200
        assert waited < 2 * IDLE + 4, waited

        for name, conns in body_stalls.items():
            expected = b"HTTP/1.1 400 " if name == "page upload" else b"HTTP/1.1 408 "
            for conn in conns:
                data, closed = answer(conn, timeout=5)
                assert data.startswith(expected), (name, data[:200])
                assert closed, name
        for conn in lorises:
            _data, closed = answer(conn, timeout=5)
            assert closed
    finally:
        stop.set()
        for conn in [*lorises, *(c for conns in body_stalls.values() for c in conns)]:
            conn.close()

    # Nothing half-received was kept: no job, the upload still waits, no draft, no spooled file.
    assert not Job.objects.filter(owner=alice).exists()
    upload_row = Upload.objects.get(public_id=upload["id"])
    assert upload_row.received_at is None and not upload_row.file
    assert not any(path.is_file() for path in site["media"].rglob("*"))
    assert not list(site["tmp"].glob("*.upload*"))

    # A slow upload is not a stalled one: its bytes keep coming, under the limit's gap each time,
    # for longer in all than the limit.
    conn = socket.create_connection(("127.0.0.1", port))
    small = multipart(boundary, fields, b"name\nann\nbob\n")
    conn.sendall(
        request_head("POST", "/api/v1/jobs", small, key, "Connection: close", boundary=boundary)
    )
    pieces = [small[i : i + 64] for i in range(0, len(small), 64)]
    gap = (2 * IDLE + 1) / len(pieces)
    assert gap < IDLE
    slow_started = time.monotonic()
    for piece in pieces:
        time.sleep(gap)
        conn.sendall(piece)
    data, _closed = answer(conn, timeout=10)
    conn.close()
    assert time.monotonic() - slow_started > IDLE * 2
    assert data.startswith(b"HTTP/1.1 201 "), data[:500]
    assert Job.objects.filter(owner=alice).count() == 1
