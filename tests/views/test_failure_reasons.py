"""The job page's "Why rows failed" counts rows by a cause a person recognises: an API's "500
Internal Server Error" once with its row count, not once per row because each answer carried its
own request id; with one or two of the rows' full errors as examples.

Runs on whichever database the suite uses: both PostgreSQL and SQLite run it.
"""

from __future__ import annotations

import html
import re
import uuid
from datetime import UTC, datetime

import pytest
from django.urls import reverse

from jobs import failures, reasons, services
from jobs.models import JobStatus, Row, RowStatus
from jobs.processors import RowError
from jobs.processors.template import TemplateProcessor
from tests.conftest import make_job
from tests.factories import JobFactory, add_rows
from tests.processors.servers import LocalServer, _Handler

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


class FailingAPI(_Handler):
    """/e500/… answers 500 and /e400/… 400, each with a body of its own (a request id, a time),
    as real APIs do; anything else 200."""

    def _any(self) -> None:
        self._read_body()
        stamp = datetime.now(UTC).isoformat()
        if self.path.startswith("/e500/"):
            self.send(500, {"error": "internal", "request_id": str(uuid.uuid4()), "at": stamp})
        elif self.path.startswith("/e400/"):
            self.send(400, {"error": "invalid input", "request_id": f"req_{uuid.uuid4().hex}"})
        else:
            self.send(200, {"ok": True})

    do_GET = do_POST = _any  # noqa: N815


def shown_reasons(body: str) -> list[tuple[str, list[str], str]]:
    """(reason, its examples, rows) as the table shows them, unescaped."""
    table = body.split('data-testid="failure-reasons"')[1].split("</table>")[0]
    found = []
    for cell, rows in re.findall(
        r'<tr><td class="error-text">(.*?)</td><td class="num">([^<]*)</td></tr>', table
    ):
        text = html.unescape(cell.split("<span", 1)[0])
        examples = [
            html.unescape(e)
            for e in re.findall(r'<span class="reason-example"[^>]*>e\.g\. (.*?)</span>', cell)
        ]
        found.append((text, examples, rows))
    return found


@pytest.fixture
def api_server(settings):
    settings.BATCHHUB_PROCESSOR_ALLOW_PRIVATE = "127.0.0.0/8"
    with LocalServer(FailingAPI) as server:
        yield server


def test_an_apis_errors_are_counted_by_status_not_by_body(client_alice, alice, run_job, api_server):
    paths = ["e500"] * 12 + ["e400"] * 5 + ["fine"] * 3
    csv_text = "path,n\n" + "".join(f"{p},{i}\n" for i, p in enumerate(paths))
    job = make_job(
        alice,
        csv_text,
        processor="http",
        params={"url": api_server.url + "/{path}/{n}", "timeout": 5},
        max_attempts=2,
    )
    job = run_job(job)
    assert job.status == JobStatus.PARTIAL and job.failed == 17
    errors = set(Row.objects.filter(job=job, status=RowStatus.FAILED).values_list("error", flat=1))
    assert len(errors) == 5 + 1  # each 400 its own body; the 500s say the status alone

    body = client_alice.get(reverse("jobs:detail", args=[job.public_id])).content.decode()
    shown = shown_reasons(body)
    assert [(text, rows) for text, _, rows in shown] == [
        ("The API answered 500 Internal Server Error", "12"),
        ("The API answered 400 Bad Request", "5"),
    ]
    assert shown[0][1] == ["The API answered 500 Internal Server Error (gave up after 2 attempts)"]
    # Two of the 400s' full errors, bodies and all, as examples.
    assert len(shown[1][1]) == 2
    for example in shown[1][1]:
        assert example.startswith('The API answered 400 Bad Request: {"error": "invalid input"')
        assert example in errors
    assert "Other reasons" not in body
    # The section alone (reloaded as rows fail) says the same.
    part = client_alice.get(reverse("jobs:downloads", args=[job.public_id]), **HTMX)
    assert shown_reasons(part.content.decode()) == shown


def test_other_errors_are_counted_without_their_ids_and_numbers(
    client_alice, alice, run_job, monkeypatch
):
    def upstream(self, row):
        n = int(row.values["name"][1:])
        if n % 3 == 0:
            raise RowError(f"Lookup failed for record {uuid.uuid4()} after {1000 + n} ms")
        if n % 3 == 1:
            raise RowError("The text is empty.")
        return {"text": "ok"}

    monkeypatch.setattr(TemplateProcessor, "process_row", upstream)
    job = run_job(make_job(alice, "name,text\n" + "".join(f"r{i},x\n" for i in range(9))))
    assert job.failed == 6
    body = client_alice.get(reverse("jobs:detail", args=[job.public_id])).content.decode()
    shown = shown_reasons(body)
    assert [(text, rows) for text, _, rows in shown] == [
        ("Lookup failed for record … after … ms", "3"),
        ("The text is empty.", "3"),
    ]
    assert all(e.startswith("Lookup failed for record ") for e in shown[0][1])
    assert shown[1][1] == []  # the reason is the whole error: nothing more to show

    # A retry sends the rows back without their reasons.
    services.retry(job, actor="alice")
    assert not Row.objects.filter(job=job).exclude(reason=None).exists()


def test_rows_failed_before_reasons_were_kept_count_by_their_error(client_alice, alice):
    job = JobFactory(
        owner=alice, status=JobStatus.PARTIAL, rows=3, columns=["a"], succeeded=0, failed=3
    )
    add_rows(job, 3, status=RowStatus.FAILED, attempts=1)
    Row.objects.filter(job=job).update(error="HTTP 500", reason=None)
    Row.objects.filter(job=job, index=2).update(error=None)
    body = client_alice.get(reverse("jobs:detail", args=[job.public_id])).content.decode()
    assert [(t, r) for t, _, r in shown_reasons(body)] == [("HTTP 500", "2"), ("(no message)", "1")]


KEPT = [
    # Numbers that name the cause stay, and so do names in quotes.
    "The API answered 404 Not Found",
    "The API answered 500 Internal Server Error",
    "The row has no column 'name' (used in a template).",
    "KeyError: 'score'",
    "The worker died while processing this row (3 attempts).",
    "Timed out after 30 s",
    "Connection refused by 10.0.0.12:8080 (HTTP/1.1)",
]


@pytest.mark.parametrize("error", KEPT)
def test_a_reason_keeps_what_names_the_cause(error):
    assert reasons.reason_for(error) == error


@pytest.mark.parametrize(
    "error, reason",
    [
        (
            'failed: {"id": "req_8f3k2a9", "at": "2026-12-07T19:01:10Z", "n": 3}',
            'failed: {"id": "…", "at": "…", "n": 3}',
        ),
        ("user 550e8400-e29b-41d4-a716-446655440000 not found", "user … not found"),
        ("trace 7f3a2b1c9d0e, took 12.53 s", "trace …, took … s"),
        (
            "The page is larger than 5000000 bytes (7340032 declared).",
            "The page is larger than … bytes (… declared).",
        ),
        ("record '12345' and '67890' refused", "record '…' and '…' refused"),
        ("a\n  multi-line\terror", "a multi-line error"),
    ],
)
def test_a_reason_is_the_error_without_what_differs_per_row(error, reason):
    assert reasons.reason_for(error) == reason


def test_a_long_error_s_reason_costs_its_head_only(monkeypatch):
    # Worked out in the sync point's transaction for each failed row: a body of a megabyte in
    # every row's error ran seven patterns over all of it.
    error = "The API answered 502 Bad Gateway: " + "<p>upstream timed out 1234567</p>" * 30_000
    read = []
    space = reasons._SPACE

    class Recorded:
        def sub(self, repl, text):
            read.append(len(text))
            return space.sub(repl, text)

    monkeypatch.setattr(reasons, "_SPACE", Recorded())
    reason = reasons.reason_for(error)
    assert read == [reasons.READ_CHARS]  # the patterns saw the head, not the megabyte
    assert reason.startswith("The API answered 502 Bad Gateway: <p>upstream timed out …</p>")
    assert len(reason) <= reasons.REASON_CHARS


def test_the_count_is_made_once_for_a_jobs_state(alice, django_assert_num_queries):
    job = JobFactory(
        owner=alice, status=JobStatus.PROCESSING, rows=4, columns=["a"], succeeded=0, failed=2
    )
    add_rows(job, 4, status=RowStatus.FAILED, attempts=1)
    Row.objects.filter(job=job).update(error="boom", reason="boom")
    Row.objects.filter(job=job, index__gte=2).update(status=RowStatus.RUNNING)
    first = failures.reasons(job)
    with django_assert_num_queries(0):  # another page looking at the same state
        assert failures.reasons(job) == first
    # A sync point fails another row: the job's counters and stamp move, the count follows.
    Row.objects.filter(job=job, index=2).update(status=RowStatus.FAILED)
    job.failed = 3
    job.save(update_fields=["failed", "updated_at"])
    assert [(r.text, r.rows) for r in failures.reasons(job)[0]] == [("boom", 3)]


def test_a_rows_own_short_number_does_not_split_a_cause(client_alice, alice, run_job, monkeypatch):
    # "boom on 11" and "boom on 110" were two causes, each of one row: every row its own line.
    # A number naming the cause (an exit code shared by many rows) still splits.
    def upstream(self, row):
        n = int(row.values["name"][1:])
        if n % 2 == 0:
            raise RowError(f"boom on {n}")
        if n % 5 == 1:
            raise RowError(f"worker exited with code {1 if n < 20 else 2}")
        return {"text": "ok"}

    monkeypatch.setattr(TemplateProcessor, "process_row", upstream)
    job = run_job(make_job(alice, "name,text\n" + "".join(f"r{i},x\n" for i in range(40))))
    assert job.failed == 24
    body = client_alice.get(reverse("jobs:detail", args=[job.public_id])).content.decode()
    shown = shown_reasons(body)
    assert [(text, rows) for text, _, rows in shown] == [
        ("boom on …", "20"),
        ("worker exited with code 1", "2"),
        ("worker exited with code 2", "2"),
    ]
    assert shown[0][1] == ["boom on 0", "boom on 8"]  # least and greatest, as text sorts


def _groups(*items: tuple[str, int]) -> list[tuple[str, int]]:
    merged = failures.merge_numbered(
        [failures._Group(text, rows, text, text) for text, rows in items]
    )
    return sorted(((g.text, g.rows) for g in merged), key=lambda g: (-g[1], g[0]))


def test_numbers_are_merged_only_where_rows_carry_their_own():
    assert _groups(("boom on 11", 1), ("boom on 110", 1)) == [("boom on …", 2)]
    # Few values, many rows each: causes.
    assert _groups(("The API answered 404", 50), ("The API answered 500", 30)) == [
        ("The API answered 404", 50),
        ("The API answered 500", 30),
    ]
    # A row's number beside a cause's: only the row's reads "…".
    rows = [(f"row {i}: answered {404 if i % 2 else 500}", 1) for i in range(40)]
    assert _groups(*rows) == [("row …: answered 404", 20), ("row …: answered 500", 20)]
    # Numbers inside versions, addresses and times are not a row's number.
    kept = [("Connection refused by 10.0.0.12:8080 (HTTP/1.1)", 1), ("HTTP/2 stream reset", 1)]
    assert _groups(*kept) == sorted(kept, key=lambda g: g[0])


def test_a_grouped_number_is_taken_out_like_a_long_one():
    assert (
        reasons.reason_for("The file has 1,234,567 rows, over 1,000,000.")
        == "The file has … rows, over …."
    )
