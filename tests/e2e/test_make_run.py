"""`make run` on the embedded default (SQLite, filesystem broker) serves the site and runs a job."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def make_run(tmp_path):
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL")
    }
    env.update(
        {
            "PORT": str(port),
            "BATCHHUB_DATA_DIR": str(tmp_path / "var"),
            "BATCHHUB_ADMIN_USER": "boss",
            "BATCHHUB_ADMIN_PASSWORD": "a long test password",
            "MEDIA_ROOT": str(tmp_path / "var" / "media"),
            "STATIC_ROOT": str(tmp_path / "var" / "static"),
        }
    )
    env.pop("DJANGO_SETTINGS_MODULE", None)
    log = open(tmp_path / "make-run.log", "wb")
    proc = subprocess.Popen(
        ["make", "--no-print-directory", "run"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / "make-run.log").read_text()
        try:
            if httpx.get(f"{base}/accounts/login/", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.5)
    else:
        raise AssertionError(
            "make run did not serve the site: " + (tmp_path / "make-run.log").read_text()[-3000:]
        )
    yield base, tmp_path / "make-run.log"
    os.killpg(proc.pid, signal.SIGTERM)  # what Ctrl-C does: honcho stops web, worker and beat
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("make run did not stop on SIGTERM") from None
    log.close()


def test_make_run_serves_the_site_and_processes_a_job(make_run):
    base, log_path = make_run
    output = log_path.read_text()
    assert f"BatchHub is starting at {base}/" in output
    assert "Log in as 'boss'" in output
    # The worker yields the CPU to the web process (batchhub/priority.py); it leads its own
    # session (the Procfile execs it), so on Linux its scheduling group is lowered too.
    assert "worker runs at nice 10" in output
    if Path("/proc/self/autogroup").exists():
        assert "worker runs at nice 10 (and its session's scheduling group)" in output

    with httpx.Client(base_url=base, timeout=10, follow_redirects=True) as web:
        page = web.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        home = web.post(
            "/accounts/login/",
            data={
                "username": "boss",
                "password": "a long test password",
                "csrfmiddlewaretoken": token,
            },
        )
        assert "Jobs" in home.text and home.url.path == "/"
        csrf = {"X-CSRFToken": web.cookies["csrftoken"], "Referer": base + "/"}
        created = web.post(
            "/api/v1/jobs",
            headers=csrf,
            files={
                "file": (
                    "people.csv",
                    b"first,last\nAda,Lovelace\nAlan,Turing\nGrace,Hopper\n",
                    "text/csv",
                )
            },
            data={
                "processor": "template",
                "params": '{"template": "{first} {last}", "output_column": "full"}',
            },
        )
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            job = web.get(f"/api/v1/jobs/{job_id}").json()
            if job["status"] in ("completed", "partial", "failed", "cancelled"):
                break
            time.sleep(0.5)
        assert job["status"] == "completed", (job, log_path.read_text()[-3000:])
        results = web.get(f"/api/v1/jobs/{job_id}/results", params={"format": "csv"})
        assert results.text.splitlines() == [
            "first,last,full,_status,_error",
            "Ada,Lovelace,Ada Lovelace,succeeded,",
            "Alan,Turing,Alan Turing,succeeded,",
            "Grace,Hopper,Grace Hopper,succeeded,",
        ]
    # The embedded default really was used: a SQLite file and the filesystem broker's folders.
    var = log_path.parent / "var"
    assert (var / "batchhub.sqlite3").exists() and (var / "broker").is_dir()
    # …and nothing was written into the checkout itself (kombu's pidbox folder defaults to
    # ./control).
    assert not (ROOT / "control").exists()
