"""Results CSV round trip: whatever a cell holds, the download reads back as the same rows.

Runs on both databases: PostgreSQL writes the CSV with COPY (and the formula rule in SQL), SQLite
through Python's csv module. A bare CR that is not quoted splits a record in two for every reader
(spreadsheets included), and the second half escapes the formula rule.
"""

from __future__ import annotations

import csv
import io
import re

import pytest

from jobs.models import Job

from .conftest import API, create_json

pytestmark = pytest.mark.django_db

CELLS = [
    "plain",
    "one\rtwo",
    "one\ntwo",
    "one\r\ntwo",
    "\r=1+1",
    "\n=1+1",
    "x\r=1+1",
    "x\n@SUM(A1)",
    '\r\n=HYPERLINK("http://evil")',
    'say "hi", then go',
    '"quoted"',
    "=1+1",
    "+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1)",
    "\tTAB",
    "tab\tinside",
    "-3.5",
    "+7",
    "trailing\r",
    "trailing\n",
    "\r",
    ",",
    "",
    "é\r\nü",
    "é=1+1",
    "=",
    "-",
    "+.5e3",
    "-١٢",
    "١٢",
]
FORMULA_START = ("=", "+", "-", "@", "\t", "\r", "\n")
# ASCII digits: a sign before another script's digits is not a number to a spreadsheet.
NUMBER = re.compile(r"[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?")


def _is_formula(cell: str) -> bool:
    return bool(cell) and cell[0] in FORMULA_START and not NUMBER.fullmatch(cell)


def _expected(cell: str) -> str:
    return "'" + cell if _is_formula(cell) else cell


@pytest.fixture
def finished(api_alice, run_job):
    rows = [{"id": f"r{i}", "cell": cell} for i, cell in enumerate(CELLS)]
    created = create_json(
        api_alice, rows, params={"template": "{cell}"}, id_column="id", name="cells.csv"
    )
    assert created.status_code == 201, created.json()
    job = run_job(Job.objects.get(public_id=created.json()["id"]))
    assert job.status == "completed", job.status
    return job


def _download(client, job) -> bytes:
    response = client.get(f"{API}/jobs/{job.public_id}/results?format=csv")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    return b"".join(response.streaming_content)


def test_every_cell_reads_back_as_one_record_per_row(api_alice, finished):
    body = _download(api_alice, finished).decode("utf-8")

    records = list(csv.reader(io.StringIO(body, newline="")))

    assert records[0] == ["id", "cell", "text", "_status", "_error"]
    assert len(records) == len(CELLS) + 1  # the header, then one record per row
    for i, (record, cell) in enumerate(zip(records[1:], CELLS, strict=True)):
        assert record == [f"r{i}", _expected(cell), _expected(cell), "succeeded", ""], (
            i,
            cell,
        )


def test_no_record_a_reader_sees_starts_a_formula(api_alice, finished):
    """What a spreadsheet opens: each record's cells, none of them a live formula."""
    body = _download(api_alice, finished).decode("utf-8")

    for record in csv.reader(io.StringIO(body, newline="")):
        assert not any(_is_formula(cell) for cell in record), record


def test_line_breaks_inside_cells_are_always_quoted(api_alice, finished):
    """Outside quotes the only line break is the record terminator, LF."""
    body = _download(api_alice, finished).decode("utf-8")

    outside = re.sub(r'"(?:[^"]|"")*"', "", body)  # drop every quoted field
    assert "\r" not in outside
    assert outside.count("\n") == len(CELLS) + 1


def test_every_header_name_is_unique_so_cells_read_back_by_name(api_alice, run_job):
    # An input with `_status`, `_error` and `output.text` columns, and an output named `text`,
    # gave a header with three names twice: csv.DictReader kept one cell of each pair.
    rows = [{"text": "hi", "output.text": "o", "_status": "s", "_error": "e"}]
    created = create_json(api_alice, rows, params={"template": "{text}!"})
    assert created.status_code == 201, created.json()
    job = run_job(Job.objects.get(public_id=created.json()["id"]))

    body = _download(api_alice, job).decode("utf-8")

    records = list(csv.DictReader(io.StringIO(body, newline="")))
    assert records == [
        {
            "text": "hi",
            "output.text": "o",
            "input._status": "s",
            "input._error": "e",
            "output.text.2": "hi!",
            "_status": "succeeded",
            "_error": "",
        }
    ]
