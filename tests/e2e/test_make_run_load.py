"""`make run` (SQLite + filesystem broker) under a real load: a 100,000-row job, controls and
polls answered fast and never with a 5xx, every row processed exactly once, and a Ctrl-C
(SIGTERM) in the middle of a job that the next `make run` finishes."""

from __future__ import annotations

import csv
import io
import json
import os
import threading
import time
from collections import Counter

import httpx
import pytest

from tests.support.makerun import MakeRun

pytestmark = pytest.mark.e2e

ROWS = int(os.environ.get("BATCHHUB_E2E_ROWS") or 100_000)
TERMINAL = {"completed", "partial", "failed", "cancelled"}
TEMPLATE = "{name} <{email}>"


def table(rows: int) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["id", "name", "email", "comment"])
    for i in range(rows):
        writer.writerow([i + 1, f"Customer {i}", f"user{i}@example.com", "fast, friendly"])
    return out.getvalue().encode()


class Poller(threading.Thread):
    """Reads a job's status every 0.5 s, as a script or the job page does; keeps every answer."""

    def __init__(self, base: str, key: str, job_id: str):
        super().__init__(daemon=True)
        self.client = httpx.Client(base_url=base, headers={"X-API-Key": key}, timeout=30)
        self.job_id = job_id
        self.answers: list[tuple[int, float]] = []
        self.stop = threading.Event()
        self.seconds = 0.0

    def run(self) -> None:
        started = time.monotonic()
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                status = self.client.get(f"/api/v1/jobs/{self.job_id}").status_code
            except httpx.HTTPError:
                status = 599  # no answer at all counts as a failure too
            self.answers.append((status, time.monotonic() - began))
            self.stop.wait(max(0.0, 0.5 - (time.monotonic() - began)))
        self.seconds = time.monotonic() - started
        self.client.close()


def timed(web: httpx.Client, method: str, url: str, **kwargs) -> tuple[httpx.Response, float]:
    began = time.monotonic()
    response = web.request(method, url, **kwargs)
    return response, time.monotonic() - began


def create(web: httpx.Client, rows: int, name: str) -> dict:
    created = web.post(
        "/api/v1/jobs",
        files={"file": (f"{name}.csv", table(rows), "text/csv")},
        data={
            "processor": "template",
            "params": f'{{"template": "{TEMPLATE}", "output_column": "line"}}',
            "name": name,
        },
    )
    assert created.status_code == 201, created.text
    return created.json()


def wait(web: httpx.Client, job_id: str, predicate, timeout: float, what: str) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = web.get(f"/api/v1/jobs/{job_id}").json()
        if predicate(job):
            return job
        time.sleep(0.2)
    raise AssertionError(f"{what}: {job}")


def assert_every_row_once(web: httpx.Client, job_id: str, rows: int) -> None:
    body = web.get(f"/api/v1/jobs/{job_id}/results", params={"format": "csv"}).text
    lines = list(csv.DictReader(io.StringIO(body)))
    assert len(lines) == rows
    assert [int(r["id"]) for r in lines] == list(range(1, rows + 1))
    assert {r["_status"] for r in lines} == {"succeeded"}
    for r in lines[:: max(1, rows // 50)]:
        assert r["line"] == f"{r['name']} <{r['email']}>"


def assert_download_while_running(web: httpx.Client, job_id: str, rows: int) -> None:
    body = web.get(f"/api/v1/jobs/{job_id}/results", params={"format": "jsonl"})
    assert body.status_code == 200, body.text[:500]
    lines = [json.loads(line) for line in body.text.splitlines()]
    assert [line["input"]["id"] for line in lines] == [str(i) for i in range(1, rows + 1)]
    statuses = Counter(line["status"] for line in lines)
    assert set(statuses) <= {"pending", "running", "succeeded"}, statuses
    assert 0 < statuses["succeeded"] < rows, statuses  # a partial download, not a finished one
    for line in lines:
        if line["status"] == "succeeded":
            assert line["output"]["line"] == f"{line['input']['name']} <{line['input']['email']}>"
        else:
            assert line["output"] is None, line


def assert_json_and_last_page(web: httpx.Client, job_id: str, rows: int) -> None:
    whole = web.get(f"/api/v1/jobs/{job_id}/results", params={"format": "json"}).json()
    assert [r["input"]["id"] for r in whole] == [str(i) for i in range(1, rows + 1)]
    assert {r["status"] for r in whole} == {"succeeded"}
    last = web.get(f"/api/v1/jobs/{job_id}/rows", params={"offset": rows - 500, "limit": 500})
    assert last.status_code == 200, last.text[:500]
    page = last.json()
    assert page["count"] == rows
    assert [r["input"]["id"] for r in page["results"]] == [
        str(i) for i in range(rows - 499, rows + 1)
    ]


def settled(job: dict) -> bool:
    c = job["counts"]
    return (
        c["pending"] == 0
        and c["running"] == 0
        and (c["succeeded"] + c["failed"] + c["cancelled"] == c["total"])
    )


@pytest.fixture
def make_run(tmp_path):
    run = MakeRun(tmp_path)
    run.start()
    yield run
    run.stop()


def test_a_100k_row_job_with_polls_and_controls_on_make_run(make_run):
    web = make_run.login()
    key = web.post("/api/v1/keys", json={"name": "poller"}).json()["key"]
    job = create(web, ROWS, "big")
    poller = Poller(make_run.base, key, job["id"])
    poller.start()
    controls: dict[str, float] = {}
    try:
        job = wait(
            web, job["id"], lambda j: j["counts"]["succeeded"] >= ROWS // 10, 120, "processing"
        )
        paused, controls["pause"] = timed(web, "POST", f"/api/v1/jobs/{job['id']}/pause")
        assert paused.status_code == 200, paused.text
        # Within a second nothing runs any more, and nothing new starts while paused.
        job = wait(web, job["id"], lambda j: j["counts"]["running"] == 0, 1.0, "pause took effect")
        done_at_pause = job["counts"]["succeeded"]
        time.sleep(1.0)
        job = web.get(f"/api/v1/jobs/{job['id']}").json()
        assert job["status"] == "paused" and job["counts"]["succeeded"] == done_at_pause
        assert done_at_pause < ROWS

        resumed, controls["resume"] = timed(web, "POST", f"/api/v1/jobs/{job['id']}/resume")
        assert resumed.status_code == 200, resumed.text
        # Results at any moment: every row once, in input order, finished ones with their output.
        assert_download_while_running(web, job["id"], ROWS)

        # A second job, cancelled while both run.
        other = create(web, ROWS // 5, "other")
        other = wait(
            web, other["id"], lambda j: j["counts"]["succeeded"] > 0, 120, "second job started"
        )
        cancelled, controls["cancel"] = timed(web, "POST", f"/api/v1/jobs/{other['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        assert cancelled.json()["status"] == "cancelled"
        other = wait(web, other["id"], settled, 1.0, "cancel took effect")
        assert other["counts"]["cancelled"] > 0

        job = wait(web, job["id"], lambda j: j["status"] in TERMINAL, 600, "the big job finished")
    finally:
        poller.stop.set()
        poller.join()
    assert job["status"] == "completed" and job["counts"]["succeeded"] == ROWS, job
    assert_every_row_once(web, job["id"], ROWS)
    assert_json_and_last_page(web, job["id"], ROWS)

    failures = [(status, took) for status, took in poller.answers if status >= 500]
    assert not failures, (failures[:10], make_run.log()[-3000:])
    # The poller asked every 0.5 s for as long as the job ran: a poll stuck behind the write lock
    # would leave fewer answers (the job's length varies with the machine, not the count).
    assert len(poller.answers) >= max(4, int(0.8 * poller.seconds / 0.5)), (
        len(poller.answers),
        poller.seconds,
    )
    slow = {name: took for name, took in controls.items() if took >= 1.0}
    assert not slow, controls
    print(
        f"\n{ROWS} rows; polls: {len(poller.answers)}, slowest "
        f"{max(t for _s, t in poller.answers) * 1000:.0f} ms; controls (ms): "
        + ", ".join(f"{k} {v * 1000:.0f}" for k, v in controls.items())
    )


def test_a_login_and_a_cancel_during_a_large_ingest_answer_at_once(make_run):
    # The ingest writes its rows in short transactions, so a session write (the login) and the
    # cancel get SQLite's write lock between two batches instead of after the whole file.
    rows = 3 * ROWS
    began = time.monotonic()
    web = make_run.login()
    idle_login = time.monotonic() - began  # mostly the password hash: CPU, no lock
    job = create(web, rows, "ingesting")
    job = wait(web, job["id"], lambda j: j["status"] != "queued", 60, "ingest started")
    assert job["status"] == "validating", job
    began = time.monotonic()
    make_run.login().close()
    login = time.monotonic() - began
    cancelled, cancel = timed(web, "POST", f"/api/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    # A login hashes the password, which the ingest's CPU slows down on a small machine.
    assert cancel < 1.0 and login < max(1.0, 2 * idle_login), (login, idle_login, cancel)
    # The ingest stopped at its next batch and took its rows away: the job never got a total.
    time.sleep(1.0)
    job = web.get(f"/api/v1/jobs/{job['id']}").json()
    assert job["status"] == "cancelled" and job["counts"]["total"] == 0, job
    body = web.get(f"/api/v1/jobs/{job['id']}/results", params={"format": "csv"}).text
    assert len(body.strip().splitlines()) <= 1, body[:500]
    print(
        f"\n{rows}-row ingest: login {login * 1000:.0f} ms (idle: {idle_login * 1000:.0f} ms), "
        f"cancel {cancel * 1000:.0f} ms"
    )


def test_ctrl_c_mid_job_and_make_run_again_finishes_every_row_once(tmp_path):
    run = MakeRun(tmp_path)
    run.start()
    try:
        web = run.login()
        job = create(web, ROWS, "restart")
        wait(web, job["id"], lambda j: j["counts"]["succeeded"] >= ROWS // 5, 120, "processing")
        web.close()
    finally:
        run.stop()
    run.start()
    poller = None
    try:
        web = run.login()
        key = web.post("/api/v1/keys", json={"name": "poller"}).json()["key"]
        poller = Poller(run.base, key, job["id"])
        poller.start()
        job = wait(web, job["id"], lambda j: j["status"] in TERMINAL, 600, "finished after restart")
        assert job["status"] == "completed" and job["counts"]["succeeded"] == ROWS, job
        assert_every_row_once(web, job["id"], ROWS)
        # The stop let the worker finish its rows in flight: nothing was taken over as after a
        # crash (each such row counted the stop as an attempt, and one at its last failed).
        events = web.get(f"/api/v1/jobs/{job['id']}/events", params={"limit": 500}).json()
        assert [e for e in events["results"] if e["type"] == "recovered"] == [], events
        assert "sending SIGKILL" not in run.log()
    finally:
        if poller is not None:
            poller.stop.set()
            poller.join()
        run.stop()
    # The site answered all along while the job was taken up again.
    assert poller.answers and all(status < 500 for status, _took in poller.answers)
