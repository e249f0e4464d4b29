"""The web process under load: status reads by 20 concurrent pollers, and memory during a big upload.

Prints JSON lines. Needs PostgreSQL (BENCH_DATABASE_URL, else DATABASE_URL). It writes a
1,000,000-row job and a 1,000-row job straight into the database (COPY), both `processing`, and
serves the project with gunicorn as `make run` does (2 workers × 4 threads). Then:
  1. 20 threads poll GET /api/v1/jobs/{id} (API key) and the detail page's live partial
     (/jobs/{id}/progress/, session, HX-Request) for a few seconds each: p50/p99 for the big job
     against the small one (goal: p99 < 20 ms and big/small < 1.2);
  2. a ~95 MB CSV is POSTed to /api/v1/jobs; the growth of the gunicorn workers' peak RSS
     (VmHWM, reset before the upload) is the figure (goal: < 30 MB).
Note: no worker writes to the job while it is polled, so row locks of a live job are not in it.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
URL = os.environ.get("BENCH_DATABASE_URL") or os.environ.get("DATABASE_URL", "")
if not URL.startswith(("postgres://", "postgresql://")):
    print(json.dumps({"bench": "web", "skipped": "needs PostgreSQL in BENCH_DATABASE_URL or DATABASE_URL"}))
    sys.exit(0)
TMP = tempfile.mkdtemp(prefix="bench-web-")
ENV = {
    "DJANGO_SETTINGS_MODULE": "batchhub.settings",
    "DATABASE_URL": URL,
    "BATCHHUB_DATA_DIR": TMP,
    "SECRET_KEY": secrets.token_urlsafe(40),
    "CACHE_URL": "locmem",
    "CELERY_BROKER_URL": "memory://",
    "BATCHHUB_RATE_READ": "1000000/min",
    "BATCHHUB_RATE_CREATE": "1000/min",
    "LOG_LEVEL": "WARNING",
}
os.environ.update(ENV)

import django  # noqa: E402

django.setup()

import httpx  # noqa: E402
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model  # noqa: E402
from django.contrib.sessions.backends.db import SessionStore  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from apikeys.services import create_key  # noqa: E402
from jobs.models import Job, JobStatus, Row  # noqa: E402

BIG = int(os.environ.get("BENCH_WEB_ROWS") or 1_000_000)
POLLERS = 20
SECONDS = float(os.environ.get("BENCH_WEB_SECONDS") or 5)


def emit(**line) -> None:
    print(json.dumps(line), flush=True)


def make_job(user, n: int) -> Job:
    job = Job.objects.create(owner=user, name=f"{n}.csv", processor="template", params={"template": "{a}"},
                             columns=["a", "b"], status=JobStatus.PROCESSING, total=n, pending=n // 2,
                             succeeded=n - n // 2, samples=[[time.time() - 10, 0], [time.time(), n - n // 2]])
    with connection.cursor() as cursor, cursor.copy(
        f'COPY {Row._meta.db_table} (job_id, "index", ref, data, status, attempts) FROM STDIN'
    ) as copy:
        block = []
        for i in range(n):
            block.append(f'{job.pk}\t{i}\t{i + 1}\t["a{i}", "b"]\tpending\t0\n')
            if len(block) == 10_000:
                copy.write("".join(block))
                block.clear()
        copy.write("".join(block))
    return job


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def poll(url: str, headers: dict, cookies: dict) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + SECONDS

    def run():
        mine = []
        with httpx.Client(headers=headers, cookies=cookies, timeout=10) as c:
            while time.monotonic() < stop:
                t = time.perf_counter()
                c.get(url).raise_for_status()
                mine.append(time.perf_counter() - t)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=run) for _ in range(POLLERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sorted(latencies)


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(p * len(values)))] * 1000


def main() -> None:
    call_command("migrate", verbosity=0)
    user, _ = get_user_model().objects.get_or_create(username=f"bench-web-{secrets.token_hex(3)}")
    big, small = make_job(user, BIG), make_job(user, 1000)
    connection.cursor().execute("ANALYZE")
    _key, raw = create_key(user, "bench")
    session = SessionStore()
    session[SESSION_KEY], session[BACKEND_SESSION_KEY] = str(user.pk), "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    connection.close()

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "batchhub.wsgi:application", "--bind", f"127.0.0.1:{port}",
         "--workers", "2", "--threads", "4", "--timeout", "300"],
        cwd=ROOT, env={**os.environ, **ENV}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(base + "/accounts/login/").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        api = {"X-API-Key": raw}
        page = {"HX-Request": "true"}
        cookies = {"sessionid": session.session_key}
        for name, path, headers, jar in (
            ("api_job", "/api/v1/jobs/{}", api, {}),
            ("live_partial", "/jobs/{}/progress/", page, cookies),
        ):
            poll(base + path.format(small.public_id), headers, jar)  # warm-up
            lat_big = poll(base + path.format(big.public_id), headers, jar)
            lat_small = poll(base + path.format(small.public_id), headers, jar)
            for p, label in ((0.5, "p50"), (0.99, "p99")):
                emit(bench=f"status_{name}_{label}", value=round(pct(lat_big, p), 2), unit="ms",
                     baseline=f"{label} for a 1,000-row job", baseline_value=round(pct(lat_small, p), 2),
                     ratio=round(pct(lat_big, p) / pct(lat_small, p), 3), goal="p99 < 20 ms, ratio < 1.2",
                     rows=BIG, pollers=POLLERS, requests=len(lat_big), rps=round(len(lat_big) / SECONDS))

        # Upload memory: ~95 MB of CSV through the API, streamed from disk by the client.
        path = Path(TMP) / "big.csv"
        with open(path, "w") as f:
            f.write("id,name,text\n")
            i = 0
            while f.tell() < 95 * 1024 * 1024 and i < 990_000:
                f.write("".join(f"{i + k},person {i + k},some words about item {i + k} and more\n" for k in range(10_000)))
                i += 10_000
        workers = [int(p) for p in Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()]
        before = {}
        for pid in workers:
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # reset the peak to the current RSS
            before[pid] = kb(pid, "VmRSS")
        started = time.perf_counter()
        with open(path, "rb") as fh:
            r = httpx.post(base + "/api/v1/jobs", headers=api, timeout=600,
                           files={"file": ("big.csv", fh, "text/csv")}, data={"processor": "template",
                                                                            "params": '{"template": "{name}"}'})
        elapsed = time.perf_counter() - started
        assert r.status_code == 201, r.text[:500]
        growth = max(kb(pid, "VmHWM") - before[pid] for pid in workers) / 1024
        emit(bench="upload_peak_rss_growth", value=round(growth, 1), unit="MB", baseline=None, baseline_value=None,
             ratio=None, goal="< 30 MB", file_mb=round(path.stat().st_size / 2**20, 1),
             seconds=round(elapsed, 1), rows=r.json()["counts"]["total"] or None)
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
