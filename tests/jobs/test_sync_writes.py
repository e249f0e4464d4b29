"""What a sync point writes, and the positional row path, give the same rows and counters as the
per-row path: statuses, outputs (SQL NULL when there is none), errors, attempts.

Runs on whichever database the suite uses: both PostgreSQL and SQLite run it.
"""

from __future__ import annotations

import csv
import io
import json

import psycopg
import pytest
from django.db import OperationalError, connection

from jobs import chunk_loop, creation, results, runner, syncpoint
from jobs.models import Job, JobStatus, Row, RowStatus
from jobs.processors import Processor, base
from jobs.processors.template import TemplateProcessor
from jobs.syncpoint import Done, write_rows
from tests.conftest import csv_upload, drive, make_job
from tests.factories import JobFactory, add_rows

pytestmark = pytest.mark.django_db

BIG = "x" * 300_000 + "é"


def stored(job: Job) -> dict[int, tuple]:
    """(status, output, error, attempts, output is SQL NULL) by index, read without the ORM."""
    with connection.cursor() as cursor:
        cursor.execute(
            'SELECT "index", status, output, error, attempts, output IS NULL '
            f'FROM {Row._meta.db_table} WHERE job_id = %s ORDER BY "index"',
            [job.pk],
        )
        out = {}
        for index, status, output, error, attempts, is_null in cursor.fetchall():
            if isinstance(output, (str, bytes)):
                output = json.loads(output)
            out[index] = (status, output, error, attempts, bool(is_null))
        return out


def test_write_rows_stores_every_kind_of_outcome(alice):
    job = JobFactory(owner=alice, status=JobStatus.PROCESSING, rows=8, columns=["a", "b"])
    add_rows(job, 8, status=RowStatus.RUNNING, attempts=1)
    done = [
        Done(0, RowStatus.SUCCEEDED, {"text": 'Zürich — 東京 🎉 "quoted" \\ back'}, None, 1),
        Done(1, RowStatus.SUCCEEDED, {}, None, 1),
        Done(2, RowStatus.SUCCEEDED, {"text": BIG, "n": 12345678901, "f": 1.5}, None, 2),
        Done(3, RowStatus.SUCCEEDED, {"none": None, "nested": {"k": [1, None, "v"]}}, None, 1),
        Done(4, RowStatus.FAILED, None, "Fehler: ungültig — ✗", 3),
        Done(5, RowStatus.PENDING, None, "try later", 1),
        Done(7, RowStatus.PENDING, None, None, 0),  # never began: back untouched
    ]
    write_rows(job.pk, done)
    rows = stored(job)
    for d in done:
        assert rows[d.index] == (d.status, d.output, d.error, d.attempts, d.output is None)
    # Row 6 was not in the batch.
    assert rows[6][0] == RowStatus.RUNNING and rows[6][3] == 1 and rows[6][4]
    # Through the ORM too: a missing output is SQL NULL, not JSON null.
    assert set(
        Row.objects.filter(job=job, output__isnull=True).values_list("index", flat=True)
    ) == {4, 5, 6, 7}


@pytest.mark.parametrize("batch", ["succeeded run", "mixed"])
def test_a_nul_in_an_output_or_error_is_stored_as_a_replacement_character(alice, batch):
    # An http answer holding \u0000: PostgreSQL's jsonb and text refuse it, and the whole sync
    # point failed with it, its chunk held for a lease and its rows counted as a worker's death.
    job = JobFactory(owner=alice, status=JobStatus.PROCESSING, rows=3, columns=["a"])
    add_rows(job, 3, status=RowStatus.RUNNING, attempts=1)
    done = [
        Done(0, RowStatus.SUCCEEDED, {"body": "a\x00b", "k\x00": ["\x00"]}, None, 1),
        Done(1, RowStatus.SUCCEEDED, {"body": "plain"}, None, 1),
    ]
    if batch == "mixed":
        done.append(Done(2, RowStatus.FAILED, None, "HTTP 500: \x00\x00 garbage", 1))
    write_rows(job.pk, done)
    rows = stored(job)
    assert rows[0][1] == {"body": "a\ufffdb", "k\ufffd": ["\ufffd"]}
    assert rows[1][1] == {"body": "plain"}
    if batch == "mixed":
        assert rows[2][2] == "HTTP 500: \ufffd\ufffd garbage"


def test_a_nul_beside_an_integer_past_64_bits_is_stored_too(alice):
    # Such an output is written by the stdlib's JSON writer, which escaped the NUL as \u0000:
    # jsonb refused it, and the row failed.
    job = JobFactory(owner=alice, status=JobStatus.PROCESSING, rows=1, columns=["a"])
    add_rows(job, 1, status=RowStatus.RUNNING, attempts=1)
    write_rows(job.pk, [Done(0, RowStatus.SUCCEEDED, {"n": 2**64, "body": "a\x00b"}, None, 1)])
    assert stored(job)[0][:2] == (RowStatus.SUCCEEDED, {"n": 2**64, "body": "a\ufffdb"})


def test_a_lost_connection_in_the_write_is_the_loops_to_handle(alice, monkeypatch):
    # PostgreSQL's write goes through psycopg's own cursor: its errors came out as psycopg's,
    # which the loop's "lost the database" does not know, and the step failed instead.
    if connection.vendor != "postgresql":
        pytest.skip("SQLite's write goes through Django's cursor")
    job = JobFactory(owner=alice, status=JobStatus.PROCESSING, rows=1, columns=["a"])
    add_rows(job, 1, status=RowStatus.RUNNING, attempts=1)

    def lost(self, *args, **kwargs):
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(syncpoint.PgCursor, "execute", lost)
    with pytest.raises(OperationalError) as raised:
        write_rows(job.pk, [Done(0, RowStatus.SUCCEEDED, {"t": 1}, None, 1)])
    assert isinstance(raised.value, runner.DATABASE_LOST)


def test_write_rows_twice_overwrites_output_with_null(alice):
    job = JobFactory(owner=alice, status=JobStatus.PROCESSING, rows=2, columns=["a"])
    add_rows(job, 2, status=RowStatus.RUNNING, attempts=1)
    write_rows(job.pk, [Done(0, RowStatus.SUCCEEDED, {"t": "a"}, None, 1)])
    write_rows(job.pk, [Done(0, RowStatus.PENDING, None, None, 1)])
    assert stored(job)[0] == (RowStatus.PENDING, None, None, 1, True)


def test_a_failed_rows_reason_is_stored_beside_its_error(alice):
    # What the job page counts failed rows by: the processor's named cause, else the error
    # without its per-row parts; nothing for a row that did not fail.
    job = JobFactory(owner=alice, status=JobStatus.PROCESSING, rows=4, columns=["a"])
    add_rows(job, 4, status=RowStatus.RUNNING, attempts=1)
    write_rows(
        job.pk,
        [
            Done(
                0, RowStatus.FAILED, None, "The API answered 500: req 9f8e7d6c5b4a", 1, "HTTP 500"
            ),
            Done(1, RowStatus.FAILED, None, "No record 9f8e7d6c5b4a", 1),
            Done(2, RowStatus.PENDING, None, "timed out", 1, "timeout"),
            Done(3, RowStatus.SUCCEEDED, {"t": 1}, None, 1),
        ],
    )
    reasons = dict(Row.objects.filter(job=job).values_list("index", "reason"))
    assert reasons == {0: "HTTP 500", 1: "No record …", 2: None, 3: None}
    # A failed row that later succeeds (a retry) keeps no reason, on either write path.
    write_rows(job.pk, [Done(i, RowStatus.SUCCEEDED, {"t": 1}, None, 2) for i in (0, 1)])
    assert set(Row.objects.filter(job=job).values_list("reason", flat=True)) == {None}


RUNS = {
    # A run of consecutive rows in order, all succeeded at one attempt: a CPU group's batch.
    "run": [(i, 2) for i in range(1, 6)],
    "gap": [(1, 2), (2, 2), (4, 2), (5, 2)],
    "out of order": [(2, 2), (1, 2), (3, 2), (4, 2), (5, 2)],
    "attempts differ": [(1, 2), (2, 2), (3, 1), (4, 2), (5, 2)],
    "one row": [(3, 1)],
}


@pytest.mark.parametrize("shape", RUNS)
def test_write_rows_stores_succeeded_rows_whatever_their_order(alice, shape):
    job = JobFactory(owner=alice, status=JobStatus.PROCESSING, rows=7, columns=["a"])
    add_rows(job, 7, status=RowStatus.RUNNING, attempts=1)
    done = [
        Done(index, RowStatus.SUCCEEDED, {"text": f"out {index} é", "n": index}, None, attempts)
        for index, attempts in RUNS[shape]
    ]
    write_rows(job.pk, done)
    rows = stored(job)
    for d in done:
        assert rows[d.index] == (RowStatus.SUCCEEDED, d.output, None, d.attempts, False)
    written = {d.index for d in done}
    for index in set(range(7)) - written:
        assert rows[index] == (RowStatus.RUNNING, None, None, 1, True)


def _per_row(monkeypatch) -> None:
    """Force the per-row path: a process_row that only calls the original one."""
    original = TemplateProcessor.process_row

    def process_row(self, row):
        return original(self, row)

    monkeypatch.setattr(TemplateProcessor, "process_row", process_row)


CSV = (
    "name,city,score,other\n"
    "Zoë,Zürich,1.5,second\n"
    "東京,,2,\n"
    '"quote ""q""",Lyon,,x\n'
    + "".join(f"p{i},c{i},{i},n{i}\n" for i in range(40))
    + f"big,{BIG[-100_000:]},3,y\n"
)
TEMPLATE = "{name} <{city}> {{lit}} {score:>6}!"


def _run(alice, text: str, template: str, *, name: str = "input.csv") -> tuple:
    job, _ = creation.create_job(
        alice,
        processor="template",
        params={"template": template},
        source=creation.Source(upload=csv_upload(text, name)),
        actor="alice",
    )
    job = drive(job)
    body = b"".join(results.stream(job, "csv")).decode()
    table = [
        {k: v for k, v in row.items() if k not in ("job_row",)}
        for row in csv.DictReader(io.StringIO(body))
    ]
    counters = (job.status, job.total, job.succeeded, job.failed, job.pending, job.running)
    return counters, table, list(stored(job).values())


@pytest.mark.parametrize("template", [TEMPLATE, "{score:d} for {name}", "plain {{text}}"])
def test_positional_rows_match_the_per_row_path(alice, monkeypatch, template):
    fast = _run(alice, CSV, template)
    with monkeypatch.context() as m:
        _per_row(m)
        slow = _run(alice, CSV, template)
    assert fast == slow
    assert fast[0][0] in (JobStatus.COMPLETED, JobStatus.PARTIAL)


def test_positional_rows_match_for_jsonl_rows_missing_keys(alice, monkeypatch):
    text = "\n".join(
        json.dumps(row, ensure_ascii=False)
        for row in [
            {"name": "a", "city": "Oslo", "score": 1},
            {"name": "b"},
            {"name": None, "city": "Kraków", "score": None},
            {"name": "d", "city": {"nested": True}, "score": 2.5},
        ]
    )
    template = "{name}/{city}/{score}"
    fast = _run(alice, text, template, name="in.jsonl")
    with monkeypatch.context() as m:
        _per_row(m)
        slow = _run(alice, text, template, name="in.jsonl")
    assert fast == slow


# --- which processors run positionally ------------------------------------------------------------


def test_the_template_runs_positionally():
    assert TemplateProcessor({"template": "{a}"}).positional()


def test_a_processor_without_process_values_does_not():
    class Plain(Processor):
        name = "plain"

        def process_row(self, row):
            return {}

    assert not Plain().positional()


def test_a_subclass_replacing_process_row_does_not():
    class Custom(TemplateProcessor):
        def process_row(self, row):
            return {"text": "custom"}

    class Batched(TemplateProcessor):
        def process(self, batch):
            return super().process(batch)

    class Same(TemplateProcessor):
        pass

    assert not Custom({"template": "{a}"}).positional()
    assert not Batched({"template": "{a}"}).positional()
    assert Same({"template": "{a}"}).positional()


def test_a_patched_process_or_process_row_turns_it_off(monkeypatch):
    processor = TemplateProcessor({"template": "{a}"})
    with monkeypatch.context() as m:
        m.setattr(TemplateProcessor, "process_row", lambda self, row: {"text": "patched"})
        assert not processor.positional()
    with monkeypatch.context() as m:
        m.setattr(base.Processor, "process", lambda self, batch: [])
        assert not processor.positional()
    with monkeypatch.context() as m:
        m.setattr(processor, "run_one", lambda row: None)
        assert not processor.positional()
    assert processor.positional()


def test_a_patched_process_row_is_what_the_engine_calls(alice, monkeypatch):
    monkeypatch.setattr(TemplateProcessor, "process_row", lambda self, row: {"text": "patched"})
    job = drive(make_job(alice, "name\na\nb\n"))
    assert job.status == JobStatus.COMPLETED
    assert [o for _s, o, *_ in stored(job).values()] == [{"text": "patched"}] * 2


def test_fetch_rows_gives_index_ref_data_attempts_status(alice):
    job = JobFactory(owner=alice, status=JobStatus.PROCESSING, rows=4, columns=["a", "b"])
    add_rows(
        job,
        4,
        status=lambda i: RowStatus.SUCCEEDED if i == 1 else RowStatus.PENDING,
        data=lambda i: [f"é{i}", None if i == 2 else i],
        attempts=lambda i: i,
    )
    assert chunk_loop.fetch_rows(job.pk, 0, 4) == [
        (0, "1", ["é0", 0], 0, RowStatus.PENDING),
        (2, "3", ["é2", None], 2, RowStatus.PENDING),
        (3, "4", ["é3", 3], 3, RowStatus.PENDING),
    ]
    assert chunk_loop.fetch_rows(job.pk, 4, 10) == []


def test_fetch_rows_are_in_index_order_whatever_their_order_on_disk(alice):
    job = JobFactory(owner=alice, status=JobStatus.PROCESSING, rows=6, columns=["a"])
    add_rows(job, 6, status=RowStatus.PENDING, data=lambda i: [f"v{i}"])
    # Rewritten rows are stored again after the others: a scan of the table meets them last.
    for index in (1, 0):
        Row.objects.filter(job=job, index=index).update(attempts=1)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Read as PostgreSQL may read a chunk of a big job: page by page, not in the key's
            # order.
            cursor.execute("SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off")
    assert [index for index, *_ in chunk_loop.fetch_rows(job.pk, 0, 6)] == list(range(6))
