"""On `make run`, deleting a big job gives its space back: the database file shrinks at beat's
next step, and the two-step upload's staged folder is gone with it."""

from __future__ import annotations

import time

import httpx
import pytest

from tests.support.makerun import MakeRun

pytestmark = pytest.mark.e2e

MB = 1024 * 1024


def test_a_deleted_jobs_space_goes_back_on_make_run(tmp_path):
    run = MakeRun(tmp_path, BATCHHUB_SPACE_INTERVAL="2")
    run.start()
    web = None
    try:
        var = tmp_path / "var"
        db = var / "batchhub.sqlite3"
        staged = var / "media" / "staged"
        web = run.login()
        started = web.post("/api/v1/uploads", json={"filename": "reviews.csv"}).json()
        body = "name,text\n" + "".join(
            f"row{i},{'a long review of the thing ' * 10}{i}\n" for i in range(30_000)
        )
        put = httpx.put(started["upload_url"], content=body.encode(), timeout=60)
        assert put.status_code == 200, put.text
        created = web.post(
            "/api/v1/jobs",
            json={
                "upload": started["id"],
                "processor": "template",
                "params": {"template": "{name}: {text}"},
            },
        )
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        deadline = time.monotonic() + 180
        while (job := web.get(f"/api/v1/jobs/{job_id}").json())["status"] != "completed":
            assert job["status"] in ("queued", "validating", "processing", "finalizing"), job
            assert time.monotonic() < deadline, job
            time.sleep(0.5)
        full = db.stat().st_size
        assert full > 16 * MB

        assert web.delete(f"/api/v1/jobs/{job_id}").status_code == 204

        # beat's step runs every 2 s here: the file gives back all but the 4 MB it keeps.
        said = "of the database's free space back in"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if db.stat().st_size <= 8 * MB and said in run.log():
                break
            time.sleep(0.5)
        assert db.stat().st_size <= 8 * MB, (full, db.stat().st_size, run.log()[-3000:])
        assert said in run.log()
        assert (var / "batchhub.sqlite3-wal").stat().st_size <= 16 * MB
        assert not (staged / started["id"]).exists()
    finally:
        if web is not None:
            web.close()
        run.stop()
