"""`make run` on the embedded default (SQLite, filesystem broker) serves the site and runs a job."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
import pytest

from tests.support.makerun import ROOT, MakeRun

pytestmark = pytest.mark.e2e


@pytest.fixture
def make_run(tmp_path):
    run = MakeRun(tmp_path)
    run.start()
    yield run.base, run.log_path
    run.stop()


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
