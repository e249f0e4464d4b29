"""A processor that overrides run_one or process and raises fails its rows with its own error,
at once and once, instead of failing the loop's step (which held the rows for a lease and, after
the attempts limit, ended them as rows that killed their worker)."""

from __future__ import annotations

import pytest

from jobs import sample
from jobs.models import JobStatus, Row, RowStatus
from jobs.processors import base, calls
from jobs.syncpoint import CPU_GROUP_ROWS
from tests.conftest import drive, make_job, rows_text
from tests.jobs.test_recovery import assert_counters_valid
from tests.support.raising_processors import ALL, BAD

pytestmark = pytest.mark.django_db

ROWS = 20


@pytest.fixture(autouse=True)
def raising_processors(monkeypatch):
    for cls in ALL:
        monkeypatch.setitem(base.registry(), cls.name, cls)


def finished(alice, processor: str, rows: int = ROWS, concurrency: int = 2, **kwargs):
    job = make_job(alice, rows_text(rows), processor=processor, concurrency=concurrency, **kwargs)
    job = drive(job)
    assert_counters_valid(job)
    return job, {r.ref: r for r in Row.objects.filter(job=job)}


@pytest.mark.parametrize("processor", ["raising-run-one", "raising-io-run-one"])
def test_a_run_one_that_raises_fails_its_row_with_its_error(alice, processor):
    job, rows = finished(alice, processor)
    assert job.status == JobStatus.PARTIAL
    assert (job.succeeded, job.failed) == (ROWS - 1, 1)
    bad = next(r for r in rows.values() if r.data[0] == BAD)
    assert bad.status == RowStatus.FAILED
    assert bad.error == f"ValueError: cannot echo {BAD}"
    assert bad.attempts == 1  # at once: not run again, not left for a lease
    good = [r for r in rows.values() if r is not bad]
    assert all(r.status == RowStatus.SUCCEEDED and r.attempts == 1 for r in good)
    assert {r.output["echo"] for r in good} == {r.data[0] for r in good}


def test_a_process_that_raises_fails_its_batchs_rows_with_its_error(alice):
    # Which row made the batch's call raise cannot be told: the batch's rows fail, each once.
    rows_count = 2 * CPU_GROUP_ROWS
    job, rows = finished(alice, "raising-process", rows_count)
    failed = [r for r in rows.values() if r.status == RowStatus.FAILED]
    assert job.status == JobStatus.PARTIAL
    assert job.failed == len(failed) and job.succeeded == rows_count - len(failed)
    assert BAD in {r.data[0] for r in failed}
    assert 0 < len(failed) < rows_count  # the batches without the row went through
    assert {r.error for r in failed} == {"KeyError: 'the model refused the batch'"}
    assert {r.attempts for r in rows.values()} == {1}


def test_a_retryable_error_raised_by_run_one_retries_its_row(alice):
    job, rows = finished(alice, "busy-run-one", max_attempts=3)
    bad = next(r for r in rows.values() if r.data[0] == BAD)
    assert (job.succeeded, job.failed) == (ROWS - 1, 1)
    assert bad.attempts == 3
    assert bad.error == "the service is busy (gave up after 3 attempts)"


def test_a_process_returning_the_wrong_count_fails_its_rows(alice, monkeypatch):
    monkeypatch.setattr(
        base.registry()["raising-process"], "process", lambda self, batch: [{"echo": "x"}]
    )
    job, rows = finished(alice, "raising-process", rows=3, concurrency=1)
    assert (job.succeeded, job.failed) == (0, 3)
    assert {r.error for r in rows.values()} == {
        "The processor returned 1 results for 3 rows: none can be matched to its row."
    }


def test_the_first_rows_sample_shows_the_error_too(alice):
    # The new-job page's "Try on the first 10 rows": a 500 before.
    for name in ("raising-run-one", "raising-process"):
        entries = sample.run_sample(name, {}, [{"name": f"person{i}"} for i in range(10)])
        errors = [entry["error"] for entry in entries]
        assert errors[7] and errors[7].startswith(("ValueError", "KeyError"))


def test_calls_guard_what_the_documented_method_already_guards():
    processor = base.registry()["raising-run-one"](params={})
    row = base.RowInput(index=7, ref="8", values={"name": BAD}, inputs={"name": BAD})
    assert calls.run_one(processor, row).error == f"ValueError: cannot echo {BAD}"
