"""Jobs taking turns on two worker processes, each one's next step waiting in the queue for
longer than the lease: none is restarted as if a worker had stopped, none gets a second set of
loops (the service never sees more of a job's requests at once than its concurrency)."""

from __future__ import annotations

import json
import time
from collections import Counter
from urllib.parse import parse_qs, urlsplit

import pytest

from jobs.models import JobEvent
from tests.conftest import make_job
from tests.e2e.test_io_jobs import finished
from tests.processors.servers import EchoHandler, LocalServer
from tests.support.makerun import MakeRun

pytestmark = pytest.mark.e2e

JOBS, ROWS, CONCURRENCY, LEASE = 6, 400, 4, 5


class PerJobHandler(EchoHandler):
    """/latency?job=…: the most requests of each job the service had in flight at once."""

    def _any(self) -> None:
        state = self.state
        job = parse_qs(urlsplit(self.path).query).get("job", ["?"])[0]
        with state["lock"]:
            state["inflight"][job] += 1
            state["most"][job] = max(state["most"][job], state["inflight"][job])
        try:
            super()._any()
        finally:
            with state["lock"]:
                state["inflight"][job] -= 1

    do_GET = _any  # noqa: N815


@pytest.fixture
def service():
    with LocalServer(PerJobHandler, inflight=Counter(), most=Counter(), latency=0.05) as server:
        yield server


def params(service, name: str) -> dict:
    url = f"{service.url}/latency?job={name}&row={{name}}"
    return {"method": "GET", "url": url, "fields": {"ok": "ok"}}


def names(k: int) -> str:
    return "name\n" + "".join(f"j{k}-{i}\n" for i in range(ROWS))


def check_the_service(service) -> None:
    asked = Counter(
        parse_qs(urlsplit(r["path"]).query)["row"][0]
        for r in service.requests
        if "row=" in r["path"]
    )
    assert asked == Counter(f"j{k}-{i}" for k in range(JOBS) for i in range(ROWS))  # each once
    most = service.httpd.state["most"]
    assert max(most.values()) <= CONCURRENCY, most


def test_jobs_taking_turns_on_make_run_are_never_restarted(tmp_path, service):
    # The embedded default: SQLite, the filesystem broker, two pool processes.
    run = MakeRun(
        tmp_path,
        BATCHHUB_PROCESSOR_ALLOW_PRIVATE="127.0.0.0/8",
        BATCHHUB_LEASE_SECONDS=str(LEASE),
        BATCHHUB_REAPER_INTERVAL="1",
    )
    run.start()
    try:
        web = run.login()
        ids = []
        for k in range(JOBS):
            created = web.post(
                "/api/v1/jobs",
                files={"file": (f"j{k}.csv", names(k).encode(), "text/csv")},
                data={
                    "processor": "http",
                    "params": json.dumps(params(service, f"j{k}")),
                    "concurrency": str(CONCURRENCY),
                },
            )
            assert created.status_code == 201, created.text
            ids.append(created.json()["id"])
        deadline = time.monotonic() + 300
        jobs = {}
        while len(jobs) < JOBS and time.monotonic() < deadline:
            for job_id in ids:
                job = web.get(f"/api/v1/jobs/{job_id}").json()
                if job["status"] in ("completed", "partial", "failed", "cancelled"):
                    jobs[job_id] = job
            time.sleep(1)
        timelines = {job_id: web.get(f"/api/v1/jobs/{job_id}/events").json() for job_id in ids}
    finally:
        run.stop()
    assert [jobs.get(job_id, {}).get("status") for job_id in ids] == ["completed"] * JOBS, (
        run.log()[-3000:]
    )
    for job_id, events in timelines.items():
        events = events.get("results", events) if isinstance(events, dict) else events
        said = [e["message"] for e in events if e["type"] == "recovered"]
        assert said == [], (job_id, said)
    check_the_service(service)


# The same rule on PostgreSQL and Redis is guarded within `make test` by the fault test of jobs
# taking turns through a Redis restart; this longer run of it is for BATCHHUB_SLOW=1.
@pytest.mark.slow
def test_jobs_taking_turns_on_a_real_worker_are_never_restarted(alice, worker_factory, service):
    # PostgreSQL and Redis: the lease is the fixture's 5 s, the reaper runs every second.
    worker_factory(beat=True, concurrency=2)
    jobs = [
        make_job(alice, names(k), processor="http", params=params(service, f"j{k}"), concurrency=4)
        for k in range(JOBS)
    ]
    jobs = [finished(job, timeout=300) for job in jobs]
    assert [job.status for job in jobs] == ["completed"] * JOBS
    said = list(JobEvent.objects.filter(type="recovered").values_list("message", flat=True))
    assert said == []
    check_the_service(service)
