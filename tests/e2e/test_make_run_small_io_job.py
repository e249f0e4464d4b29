"""A small I/O job on `make run` while a long one fills both worker processes: it finishes in
seconds, and the long job's requests still never exceed its concurrency."""

from __future__ import annotations

import json
import time
from collections import Counter
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.e2e.test_taking_turns import PerJobHandler
from tests.processors.servers import LocalServer
from tests.support.makerun import MakeRun

pytestmark = pytest.mark.e2e

BIG_ROWS, BIG_CONCURRENCY = 20_000, 64
TERMINAL = ("completed", "partial", "failed", "cancelled")


@pytest.fixture
def service():
    # A service answering in 1 s: the long job's loops hold a pool process each for many rows.
    with LocalServer(PerJobHandler, inflight=Counter(), most=Counter(), latency=1.0) as server:
        yield server


def create(web, service, name: str, rows: int, concurrency: int) -> str:
    url = f"{service.url}/latency?job={name}&row={{name}}"
    created = web.post(
        "/api/v1/jobs",
        files={
            "file": (
                f"{name}.csv",
                ("name\n" + "".join(f"{name}-{i}\n" for i in range(rows))).encode(),
                "text/csv",
            )
        },
        data={
            "processor": "http",
            "params": json.dumps({"method": "GET", "url": url, "fields": {"ok": "ok"}}),
            "concurrency": str(concurrency),
        },
    )
    assert created.status_code == 201, created.text
    return created.json()["id"]


def wait(web, job_id: str, predicate, timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = web.get(f"/api/v1/jobs/{job_id}").json()
        if predicate(job):
            return job
        assert time.monotonic() < deadline, f"{what}: {job}"
        time.sleep(0.2)


def test_a_one_row_io_job_finishes_in_seconds_beside_a_long_one(tmp_path, service):
    run = MakeRun(tmp_path, BATCHHUB_PROCESSOR_ALLOW_PRIVATE="127.0.0.0/8")
    run.start()
    try:
        web = run.login()
        big = create(web, service, "big", BIG_ROWS, BIG_CONCURRENCY)
        # Both pool processes busy with the long job's steps, well into their turn.
        wait(web, big, lambda j: j["counts"]["succeeded"] >= 200, 120, "the long job's rows")
        asked = time.monotonic()
        small = create(web, service, "small", 1, 4)
        job = wait(web, small, lambda j: j["status"] in TERMINAL, 60, "the one-row job")
        took = time.monotonic() - asked
        print(f"the one-row job finished {took:.1f} s after it was asked")
        still = web.get(f"/api/v1/jobs/{big}").json()
        web.post(f"/api/v1/jobs/{big}/cancel")
        wait(web, big, lambda j: j["status"] in TERMINAL, 60, "the long job's cancel")
    finally:
        run.stop()
    assert job["status"] == "completed" and job["counts"]["succeeded"] == 1, job
    assert still["status"] == "processing", still  # the long job was still running
    # Against a worker whose steps turn only after 20 rows' time and a first step queued
    # behind the long job's waiting steps: about 39 s.
    assert took < 12, took
    most = service.httpd.state["most"]
    assert most["big"] <= BIG_CONCURRENCY and most["small"] <= 4, most
    rows = Counter(
        parse_qs(urlsplit(r["path"]).query)["row"][0]
        for r in service.requests
        if "job=small" in r["path"]
    )
    assert rows == Counter({"small-0": 1})
