"""A large JSON rows body costs the web process about what parsing it costs, not a multiple.

DRF's list-of-dict field copied every row, and the JSONL file was built as one string beside
them: a body of small rows near the JSON limit took a web worker to several times its size.
"""

from __future__ import annotations

import json
import tracemalloc

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
