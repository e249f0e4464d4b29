"""`make run` on the embedded default (SQLite, filesystem broker) serves the site and runs a job."""

from __future__ import annotations

import csv
import io
import json
import re
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_io_jobs import CountingHandler, http_params
from tests.processors.servers import LocalServer
from tests.support.makerun import ADMIN, PASSWORD, ROOT, MakeRun

pytestmark = pytest.mark.e2e


@pytest.fixture
def make_run_process(tmp_path):
    run = MakeRun(tmp_path)
    run.start()
    yield run
    run.stop()


@pytest.fixture
def make_run(make_run_process):
    return make_run_process.base, make_run_process.log_path


def _sign_in(web: httpx.Client, base: str) -> dict[str, str]:
    """Sign in as the admin `make run` creates; the headers the API's session posts need."""
    page = web.get("/accounts/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    home = web.post(
        "/accounts/login/",
        data={"username": ADMIN, "password": PASSWORD, "csrfmiddlewaretoken": token},
    )
    assert "Jobs" in home.text and home.url.path == "/"
    return {"X-CSRFToken": web.cookies["csrftoken"], "Referer": base + "/"}


def _finished(web: httpx.Client, job_id: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = web.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in ("completed", "partial", "failed", "cancelled"):
            break
        time.sleep(0.5)
    return job


def test_make_run_serves_the_site_and_processes_a_job(make_run_process):
    run = make_run_process
    base, log_path = run.base, run.log_path
    output = log_path.read_text()
    assert f"BatchHub is starting at {base}/" in output
    assert "Log in as 'boss'" in output
    # The worker yields the CPU to the web process (batchhub/priority.py); it leads its own
    # session (the Procfile execs it), so on Linux its scheduling group is lowered too.
    assert "worker runs at nice 10" in output
    if Path("/proc/self/autogroup").exists():
        assert "worker runs at nice 10 (and its session's scheduling group)" in output

    with httpx.Client(base_url=base, timeout=10, follow_redirects=True) as web:
        csrf = _sign_in(web, base)
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
        job = _finished(web, job_id)
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

    # Closing the terminal stops the site as Ctrl-C does: the hang-up never reached the
    # processes, each in a session of its own, and they went on running without a terminal.
    run.stop(sig=signal.SIGHUP)
    output = log_path.read_text()
    for name in ("web.1", "worker.1", "beat.1"):
        assert re.search(rf"{name} stopped \(rc=", output), output[-2000:]
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base}/accounts/login/", timeout=2)


def test_a_second_make_run_on_a_port_in_use_stops_before_touching_anything(tmp_path):
    run = MakeRun(tmp_path)
    with socket.create_server(("127.0.0.1", run.port)):
        done = subprocess.run(
            ["make", "--no-print-directory", "run"],
            cwd=ROOT,
            env=run.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode != 0
    assert f"Something already listens on 127.0.0.1:{run.port}" in done.stderr
    assert not (tmp_path / "var").exists()  # not migrated, no work "recovered" under a live site


@pytest.fixture
def counting_server():
    with LocalServer(CountingHandler, inflight=0, max_inflight=0, latency=0.02) as server:
        yield server


def test_an_http_job_on_make_run_calls_each_row_once_within_its_concurrency(
    tmp_path, counting_server
):
    # An I/O job on the embedded default: the loops claim their next chunks while the last rows
    # drain (jobs/chunk_loop.py), two worker processes writing one SQLite file in turn.
    run = MakeRun(tmp_path, BATCHHUB_PROCESSOR_ALLOW_PRIVATE="127.0.0.0/8")
    run.start()
    rows = 3_000
    try:
        with httpx.Client(base_url=run.base, timeout=10, follow_redirects=True) as web:
            csrf = _sign_in(web, run.base)
            names = "".join(f"n{i}\n" for i in range(rows))
            created = web.post(
                "/api/v1/jobs",
                headers=csrf,
                files={"file": ("names.csv", ("name\n" + names).encode(), "text/csv")},
                data={
                    "processor": "http",
                    "params": json.dumps(http_params(counting_server.url + "/latency")),
                    "concurrency": "32",
                },
            )
            assert created.status_code == 201, created.text
            job = _finished(web, created.json()["id"], timeout=120)
            assert job["status"] == "completed", (job, run.log()[-3000:])
            assert job["counts"]["succeeded"] == rows
            body = web.get(f"/api/v1/jobs/{job['id']}/results", params={"format": "csv"}).text
    finally:
        run.stop()
    result = list(csv.DictReader(io.StringIO(body)))
    assert [r["name"] for r in result] == [f"n{i}" for i in range(rows)]
    assert {r["ok"] for r in result} == {"true"}  # the service's JSON true, as CSV writes it
    asked = Counter(r["path"].rsplit("=", 1)[1] for r in counting_server.requests)
    assert asked == Counter(f"n{i}" for i in range(rows))  # each row once, none twice
    assert 16 <= counting_server.httpd.state["max_inflight"] <= 32
