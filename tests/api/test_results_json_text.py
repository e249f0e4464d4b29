"""JSONL and JSON downloads: the same bytes whichever database writes them.

On PostgreSQL the lines are written by COPY, each row object built in SQL; elsewhere Python dumps
row_object(). The reference here is the Python path run on the same rows, so a difference in a
key, a separator, an escape or a value's spelling fails the test, on either database.
"""

from __future__ import annotations

import json

import pytest

from jobs import results
from jobs.models import Job, Row

from .conftest import API, create_json

pytestmark = pytest.mark.django_db

VALUES = [
    "plain",
    'say "hi", then \\ go',
    "line\nbreak\r\nand\ttab",
    "\x01\x02\x1f\x7f control",
    "é ü 漢字 🙂 \u2028",
    "",
    "null",
    ",;|",
    "{not json}",
]
OUTPUTS = [
    {"text": "x"},
    {"score": 0.25, "n": 3, "ok": True, "none": None},
    {"nested": {"b": [1, "two", {"c": None}], "a": "é\n"}},
    {"big": 12345678901234567890, "neg": -7, "half": 0.5},
    None,
]


@pytest.fixture
def finished(api_alice, run_job):
    rows = [
        {"id": f"r{i}", "first name": value, "second": str(i)} for i, value in enumerate(VALUES)
    ]
    created = create_json(
        api_alice, rows, params={"template": "{first name}"}, id_column="id", name="j.csv"
    )
    assert created.status_code == 201, created.json()
    job = run_job(Job.objects.get(public_id=created.json()["id"]))
    assert job.status == "completed", job.status
    # Outputs and errors of every shape a processor can leave, written as the engine stores them.
    for i, output in enumerate(OUTPUTS):
        Row.objects.filter(job=job, index=i).update(output=output)
    Row.objects.filter(job=job, index=len(VALUES) - 1).update(
        status="failed", output=None, error='HTTP 500: "boom"\nline two é'
    )
    job.refresh_from_db()
    return job


def _python_jsonl(job: Job, status: str = "all") -> bytes:
    columns = list(job.columns or [])
    dumps = json.JSONEncoder(ensure_ascii=False).encode
    lines = [dumps(results.row_object(columns, *row)) for row in results.iter_rows(job, status)]
    return "".join(line + "\n" for line in lines).encode("utf-8")


def _get(client, job, query: str) -> bytes:
    response = client.get(f"{API}/jobs/{job.public_id}/results?{query}")
    assert response.status_code == 200, response.content[:300]
    return b"".join(response.streaming_content)


@pytest.mark.parametrize("status", ["all", "succeeded", "failed"])
def test_jsonl_is_byte_for_byte_the_python_rendering(api_alice, finished, status):
    body = _get(api_alice, finished, f"format=jsonl&status={status}")

    assert body == _python_jsonl(finished, status)
    objects = [json.loads(line) for line in body.decode("utf-8").split("\n")[:-1]]
    expected_count = {"all": len(VALUES), "succeeded": len(VALUES) - 1, "failed": 1}[status]
    assert len(objects) == expected_count


def test_jsonl_objects_hold_what_was_stored(api_alice, finished):
    # A number's spelling may differ between the paths (PostgreSQL prints what it holds:
    # 0.00000015 where Python prints 1.5e-07); its value may not.
    Row.objects.filter(job=finished, index=3).update(output={**OUTPUTS[3], "exp": 1.5e-07})
    body = _get(api_alice, finished, "format=jsonl")
    objects = [json.loads(line) for line in body.decode("utf-8").split("\n")[:-1]]

    assert [o["row"] for o in objects] == list(range(1, len(VALUES) + 1))
    assert [o["ref"] for o in objects] == [f"r{i}" for i in range(len(VALUES))]
    assert [o["input"]["first name"] for o in objects] == VALUES
    assert list(objects[0]) == ["row", "ref", "status", "input", "output", "error"]
    assert list(objects[0]["input"]) == ["id", "first name", "second"]
    assert objects[1]["output"] == OUTPUTS[1]
    assert objects[2]["output"] == OUTPUTS[2]
    assert objects[3]["output"] == {**OUTPUTS[3], "exp": 1.5e-07}
    assert objects[3]["output"]["big"] == 12345678901234567890
    assert objects[4]["output"] is None
    assert objects[-1]["status"] == "failed"
    assert objects[-1]["error"] == 'HTTP 500: "boom"\nline two é'
    assert objects[-1]["output"] is None


@pytest.mark.parametrize("status", ["all", "failed"])
def test_json_array_is_the_same_objects(api_alice, finished, status):
    body = _get(api_alice, finished, f"format=json&status={status}")
    lines = _python_jsonl(finished, status).decode("utf-8").split("\n")[:-1]

    assert body.decode("utf-8") == "[\n" + ",\n".join(lines) + "\n]\n"
    assert json.loads(body) == [json.loads(line) for line in lines]


def test_an_empty_selection_is_an_empty_file_and_an_empty_array(api_alice, finished):
    Row.objects.filter(job=finished, status="failed").update(status="succeeded", error=None)

    assert _get(api_alice, finished, "format=jsonl&status=failed") == b""
    assert _get(api_alice, finished, "format=json&status=failed") == b"[\n]\n"
