"""A row whose output the database refuses (or that cannot be written as JSON) fails alone, saying
why, at the sync point that meets it: the batch's other rows are stored once, the counters add up,
the chunk is released at once, and nothing is taken for a worker's death.

Runs on whichever database the suite uses: both PostgreSQL and SQLite run it.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from typing import Any

import pytest
from django.db import DataError, IntegrityError, OperationalError, connection
from django.urls import reverse
from psycopg import errors

from jobs import chunks, syncpoint
from jobs.models import Chunk, Job, JobEvent, JobStatus, Row, RowStatus
from jobs.processors import Processor, base
from jobs.syncpoint import Done
from tests.conftest import drive, make_job, rows_text
from tests.factories import JobFactory, add_rows
from tests.jobs.test_recovery import assert_counters_valid

pytestmark = pytest.mark.django_db

ROWS = 40
BAD = 13  # the row whose output is refused


class Outputs(Processor):
    """Echoes each row's name; the row named in `bad` returns that output instead."""

    name = "outputs_test"
    inputs = ["name"]
    outputs = ["echo"]
    bad: dict[str, Any] = {}
    calls: Counter[str] = Counter()

    def process_row(self, row):
        name = row.inputs["name"]
        Outputs.calls[name] += 1
        return Outputs.bad.get(name, {"echo": name})


class IOOutputs(Outputs):
    name = "io_outputs_test"
    io_bound = True


@pytest.fixture
def outputs(monkeypatch):
    Outputs.bad, Outputs.calls = {}, Counter()
    monkeypatch.setitem(base.registry(), Outputs.name, Outputs)
    monkeypatch.setitem(base.registry(), IOOutputs.name, IOOutputs)
    monkeypatch.setattr(chunks, "IO_CHUNK_ROWS_PER_THREAD", 5)
    return Outputs


def _refuse_row(monkeypatch, index: int, exc: Exception) -> list[int]:
    """write_rows refuses any batch holding row `index`, as PostgreSQL refuses a whole statement
    for one value; returns the sizes of the batches it was given."""
    real, sizes = syncpoint.write_rows, []

    def refusing(job_pk, done):
        sizes.append(len(done))
        if any(d.index == index and d.status == RowStatus.SUCCEEDED for d in done):
            raise exc
        return real(job_pk, done)

    monkeypatch.setattr(syncpoint, "write_rows", refusing)
    return sizes


def _run(alice, processor: str, concurrency: int = 1) -> Job:
    job = make_job(
        alice, rows_text(ROWS, header="name,text"), processor=processor, concurrency=concurrency
    )
    return drive(job)


def _assert_alone_failed(job: Job, message: str) -> Row:
    """The bad row failed with `message`; every other row succeeded at its first and only run;
    no chunk waited for a lease and nothing was recovered."""
    assert job.status == JobStatus.PARTIAL
    assert (job.succeeded, job.failed, job.pending, job.running, job.cancelled) == (
        ROWS - 1,
        1,
        0,
        0,
        0,
    )
    assert_counters_valid(job)
    bad = Row.objects.get(job=job, index=BAD)
    assert bad.status == RowStatus.FAILED and bad.output is None
    assert bad.error.startswith(message), bad.error
    assert bad.attempts == 1
    others = Row.objects.filter(job=job).exclude(index=BAD)
    assert set(others.values_list("status", "attempts")) == {(RowStatus.SUCCEEDED, 1)}
    assert sorted(r.output["echo"] for r in others) == sorted(
        f"person{i}" for i in range(ROWS) if i != BAD
    )
    assert set(Outputs.calls.values()) == {1} and len(Outputs.calls) == ROWS
    # Each chunk claimed once and released done: none was left to run out its lease.
    assert set(Chunk.objects.filter(job=job).values_list("claims", "done", "lease_until")) == {
        (1, True, None)
    }
    assert not JobEvent.objects.filter(job=job, type="recovered").exists()
    return bad


@pytest.mark.parametrize("processor", [Outputs.name, IOOutputs.name])
@pytest.mark.parametrize(
    "refusal",
    [
        DataError("value out of range for type numeric"),
        IntegrityError("CHECK constraint failed: JSON_VALID(output)"),
    ],
)
def test_a_row_the_database_refuses_fails_alone(alice, monkeypatch, outputs, processor, refusal):
    sizes = _refuse_row(monkeypatch, BAD, refusal)
    job = _run(alice, processor, concurrency=4 if processor == IOOutputs.name else 1)
    bad = _assert_alone_failed(job, "The database refused this row's output: ")
    assert str(refusal) in bad.error
    # The batch was refused whole, then written a row at a time; the other batches stayed whole.
    assert max(sizes) > 1


@pytest.mark.parametrize("processor", [Outputs.name, IOOutputs.name])
@pytest.mark.parametrize(
    "output",
    [
        {"n": 10**5000},  # more digits than an integer is written with
        {(1, 2): "a tuple for a key"},
    ],
)
def test_an_output_that_cannot_be_written_as_json_fails_alone(alice, outputs, processor, output):
    outputs.bad = {f"person{BAD}": output}
    job = _run(alice, processor, concurrency=4 if processor == IOOutputs.name else 1)
    _assert_alone_failed(job, "This row's output cannot be stored: it cannot be written as JSON")


@pytest.mark.parametrize("processor", [Outputs.name, IOOutputs.name])
def test_an_output_jsonb_refuses_fails_alone_on_postgresql(alice, outputs, processor, monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("jsonb's own refusal")
    # No value of a row's output reaches jsonb as JSON it does not read (batchhub/jsonsafe.py);
    # a writer that let NaN through stands in for whatever might, so jsonb's refusal is real.
    written = syncpoint.jsonsafe.dumps
    monkeypatch.setattr(
        syncpoint.jsonsafe, "dumps", lambda value: written(value).replace('"<NaN>"', "NaN")
    )
    outputs.bad = {f"person{BAD}": {"x": "<NaN>"}}
    job = _run(alice, processor, concurrency=4 if processor == IOOutputs.name else 1)
    bad = _assert_alone_failed(job, "The database refused this row's output: ")
    assert "invalid input syntax for type json" in bad.error


def _raised(exc: Exception, cause: Exception | None = None) -> Exception:
    """`exc` as Django raises it: the driver's error as its cause."""
    try:
        raise exc from cause
    except Exception as raised:
        return raised


def test_a_lost_database_is_not_taken_for_a_refused_row():
    # A lost connection is the loop's to handle (it gives its chunk back): no row fails for it.
    lost = OperationalError("server closed the connection unexpectedly")
    assert not syncpoint.refused_for_content(_raised(lost))
    assert not syncpoint.refused_for_content(_raised(lost, errors.lookup("08006")("gone")))
    # The database is there and refuses the statement for its size: a row's content.
    limit = errors.lookup("54000")("total size of jsonb array elements exceeds the maximum")
    assert syncpoint.refused_for_content(_raised(OperationalError(str(limit)), limit))
    assert syncpoint.refused_for_content(_raised(DataError("numeric field overflow")))


def test_write_each_stores_the_good_rows_and_fails_the_refused(alice, monkeypatch):
    job = JobFactory(owner=alice, status=JobStatus.PROCESSING, rows=4, columns=["a"])
    add_rows(job, 4, status=RowStatus.RUNNING, attempts=1)
    _refuse_row(monkeypatch, 2, DataError("numeric field overflow"))
    done = [Done(i, RowStatus.SUCCEEDED, {"t": i}, None, 1) for i in range(4)]
    refused = syncpoint.write_each(job.pk, done)
    assert [d.index for d in refused] == [2]
    rows = {r.index: r for r in Row.objects.filter(job=job)}
    assert [rows[i].status for i in range(4)] == [
        RowStatus.SUCCEEDED,
        RowStatus.SUCCEEDED,
        RowStatus.FAILED,
        RowStatus.SUCCEEDED,
    ]
    assert rows[2].error == "The database refused this row's output: numeric field overflow"
    assert rows[3].output == {"t": 3}


def test_the_timeline_says_once_per_sync_point_which_rows_were_refused(
    alice, client_alice, api_alice, outputs
):
    # The worker's log said it; the person watching the job saw rows fail and nothing more.
    outputs.bad = {name: {(1, 2): "a tuple for a key"} for name in ("person4", "person13")}
    job = _run(alice, Outputs.name)
    assert job.failed == 2 and job.succeeded == ROWS - 2
    events = list(JobEvent.objects.filter(job=job, type="rows_refused"))
    assert len(events) == 1  # the rows came to one sync point: one line, not one a row
    assert events[0].data == {"rows": 2, "first": [5, 14]}
    page = client_alice.get(reverse("jobs:detail", args=[job.public_id])).content.decode()
    timeline = page.split('id="timeline"')[1]
    assert "Rows refused" in timeline
    assert (
        "2 rows failed because their output could not be stored (rows 5, 14). "
        "Row 5: This row&#x27;s output cannot be stored: it cannot be written as JSON"
    ) in timeline
    api = api_alice.get(f"/api/v1/jobs/{job.public_id}/events?limit=500").json()
    assert [e["type"] for e in api["results"]].count("rows_refused") == 1


def test_each_sync_point_that_refuses_rows_says_so_once(alice, outputs):
    # Chunks of five rows: the two refused rows meet two sync points, each with its own line.
    outputs.bad = {name: {(1, 2): "x"} for name in ("person2", "person22")}
    job = _run(alice, IOOutputs.name)
    assert job.failed == 2
    events = JobEvent.objects.filter(job=job, type="rows_refused").order_by("id")
    assert [e.data for e in events] == [{"rows": 1, "first": [3]}, {"rows": 1, "first": [23]}]
    assert events[0].message.startswith("Row 3 failed because its output could not be stored: ")


def test_a_long_list_of_refused_rows_is_cut_short():
    many = [Done(i, RowStatus.FAILED, None, "e", 1) for i in range(12)]
    assert syncpoint.refused_event_message(many) == (
        "12 rows failed because their output could not be stored "
        "(rows 1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 2 more). Row 1: e"
    )


@pytest.mark.parametrize("processor", [Outputs.name, IOOutputs.name])
@pytest.mark.parametrize(
    ("output", "got"), [("a text", "a str"), (["a", "list"], "a list"), (None, "None")]
)
def test_an_output_that_is_no_dict_of_columns_fails_alone(
    alice, client_alice, api_alice, outputs, processor, output, got
):
    # Stored as it came, such a row cut every CSV download short and made the job page a 500.
    outputs.bad = {f"person{BAD}": output}
    job = _run(alice, processor, concurrency=4 if processor == IOOutputs.name else 1)
    message = f"The processor returned {got}, not a dict of output columns."
    bad = _assert_alone_failed(job, message)
    assert bad.error == message
    csv_text = api_alice.get(f"/api/v1/jobs/{job.public_id}/results?format=csv")
    assert csv_text.status_code == 200
    rows = list(csv.reader(io.StringIO(b"".join(csv_text.streaming_content).decode())))
    assert len(rows) == ROWS + 1
    assert rows[BAD + 1][-2:] == ["failed", message]
    page = client_alice.get(reverse("jobs:detail", args=[job.public_id]))
    assert page.status_code == 200
    assert "The processor returned no dict of output columns" in page.content.decode()


def test_a_sample_run_says_an_output_is_no_dict_of_columns(api_alice, outputs):
    # The sample showed the text as the row's output, as if the job would store it.
    outputs.bad = {"person1": "a text"}
    rows = [{"name": f"person{i}"} for i in range(3)]
    body = api_alice.post(
        "/api/v1/jobs/validate",
        {"processor": Outputs.name, "params": {}, "rows": rows, "sample": 3},
        format="json",
    ).json()
    assert [(r["output"], r["error"]) for r in body["sample"]] == [
        ({"echo": "person0"}, None),
        (None, "The processor returned a str, not a dict of output columns."),
        ({"echo": "person2"}, None),
    ]
