"""The `template` processor fills a JSONL row's values in as JSON spells them, as the `llm` and
`http` templates do: `true` and `{"a":1}`, never Python's `True` and `{'a': 1}`."""

from __future__ import annotations

import csv
import io
import json

import pytest

from jobs.processors.base import RowInput
from jobs.processors.template import TemplateProcessor
from tests.conftest import drive, make_job

pytestmark = pytest.mark.django_db

TEMPLATE = (
    "{id}: flag={flag} tags={tags} nested={nested} n={n:03d} price={price:.2f} note={note} "
    "late={late}"
)
LINES = [
    {
        "id": "a",
        "flag": True,
        "tags": ["x", "é"],
        "nested": {"k": None},
        "n": 7,
        "price": 2.5,
        "note": None,
    },
    {"id": "b", "flag": False, "tags": [], "nested": {}, "n": 12, "price": 0.125, "note": "hi"},
    # Keys appear as the file goes on: the first rows are shorter than the job's columns.
    {
        "id": "c",
        "flag": True,
        "tags": [1],
        "nested": {"k": 1},
        "n": 1,
        "price": 1,
        "note": "x",
        "late": True,
    },
]
FILLED = [
    'a: flag=true tags=["x","é"] nested={"k":null} n=007 price=2.50 note= late=',
    "b: flag=false tags=[] nested={} n=012 price=0.12 note=hi late=",
    'c: flag=true tags=[1] nested={"k":1} n=001 price=1.00 note=x late=true',
]


def test_a_jsonl_job_fills_its_template_with_json_text(alice, api_alice):
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in LINES)
    job = drive(make_job(alice, text, params={"template": TEMPLATE, "output_column": "out"}))
    assert (job.status, job.succeeded) == ("completed", 3)
    response = api_alice.get(f"/api/v1/jobs/{job.public_id}/results?format=csv")
    body = b"".join(response.streaming_content).decode()
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [row["out"] for row in rows] == FILLED


def test_a_row_given_as_a_dict_is_filled_alike():
    processor = TemplateProcessor({"template": TEMPLATE})
    outputs = [
        processor.run_one(
            RowInput(index=i, ref=str(i), values={"late": None, **line}, inputs={})
        ).output
        for i, line in enumerate(LINES)
    ]
    assert outputs == [{"text": filled} for filled in FILLED]
