"""A large JSON rows body costs the web process a small multiple of its size.

DRF's list-of-dict field copied every row, and the JSONL file was built as one string beside
them: a body of small rows near the JSON limit took a web worker to several times its size.
Then the parse itself, an object per row, took it to about twenty times: rows are now read one
at a time into a file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from batchhub import jsonsafe
from jobs.models import Job

from .conftest import API

pytestmark = pytest.mark.django_db

ROWS = 60_000


def _body() -> str:
    # Small rows: the most objects per byte of body, and so the most a copy of them costs.
    rows = [{"a": i % 10} for i in range(ROWS)]
    return json.dumps({"processor": "template", "params": {"template": "{a}"}, "rows": rows})


def _peak_over_parse(call) -> tuple[float, object]:
    body = _body()
    call(body)  # warm: imports and first-use caches are not what is measured
    Job.objects.all().delete()
    tracemalloc.start()
    try:
        parsed = jsonsafe.loads(body)
        parse_cost = tracemalloc.get_traced_memory()[1]
        del parsed
        start = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        response = call(body)
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    return peak / parse_cost, response


@pytest.mark.parametrize("path", ["jobs/validate", "jobs"])
def test_a_large_rows_body_costs_about_its_parse(api_alice, path):
    ratio, response = _peak_over_parse(
        lambda body: api_alice.post(f"{API}/{path}", body, content_type="application/json")
    )
    assert response.status_code in (200, 201), response.content[:300]
    if path == "jobs":
        assert Job.objects.get().input_file.read().count(b"\n") == ROWS
    else:
        assert response.json()["row_count"] == ROWS
    assert ratio < 1.4, ratio


# --- the whole request in a fresh process: its peak RSS ----------------------------------------

ROOT = Path(__file__).resolve().parents[2]
BODY_MB = 8


def _probe(path: str, data_dir: Path, field: str) -> dict:
    # Its own SQLite database, broker folder and cache: nothing of this suite's servers.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "CACHE_URL", "MEDIA_ROOT")
    }
    env.update(DJANGO_SETTINGS_MODULE="batchhub.settings", BATCHHUB_DATA_DIR=str(data_dir))
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.rows_body_probe", path, str(BODY_MB), field],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


# The probe runs on a SQLite database of its own whatever the suite's: once, in the SQLite run.
@pytest.mark.skipif(
    os.environ.get("DATABASE_URL", "").startswith("postgres"),
    reason="a process of its own on SQLite: run in the SQLite part of the suite",
)
@pytest.mark.parametrize(
    ("path", "field"), [("jobs/validate", "rows"), ("jobs", "rows"), ("jobs", "documents")]
)
def test_a_large_rows_body_takes_a_web_process_a_small_multiple_of_its_size(path, field, tmp_path):
    # Parsed whole, a body of small rows took a web process to ~20 times its size.
    result = _probe(path, tmp_path, field)
    assert result["status"] in (200, 201), result
    if path == "jobs/validate":
        assert result["row_count"] == result["rows"], result
    assert result["peak_growth_mb"] < 4 * BODY_MB, result
