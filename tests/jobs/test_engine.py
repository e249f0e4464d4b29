"""The job engine in-process: states, processing, pause/resume/cancel/retry, crash recovery."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from django.utils import timezone

from batchhub.api import InvalidState
from jobs import chunk_loop, chunks, creation, finish, reaper, results, runner, services, states
from jobs.ingest import db as ingest_db
from jobs.ingest import loading
from jobs.models import Chunk, Job, JobEvent, JobStatus, Row, RowStatus
from jobs.processors import Processor, RetryableError, RowError, base
from tests.conftest import drive, make_job, rows_text
from tests.factories import JobFactory

pytestmark = pytest.mark.django_db


class FlakyProcessor(Processor):
    """Fails rows whose name ends in 7, asks for a retry once on rows ending in 3."""

    name = "flaky"
    inputs = ["name"]
    outputs = ["upper"]
    seen: dict[str, int] = {}

    def process_row(self, row):
        name = row.inputs["name"]
        FlakyProcessor.seen[name] = FlakyProcessor.seen.get(name, 0) + 1
        if name.endswith("7"):
            raise RowError(f"{name} is unlucky")
        if name.endswith("3") and FlakyProcessor.seen[name] == 1:
            raise RetryableError("try later", retry_after=0)
        return {"upper": name.upper()}


class ThrottledProcessor(Processor):
    name = "throttled"
    inputs = ["name"]
    outputs = ["x"]

    def process_row(self, row):
        raise RetryableError("429 Too Many Requests", retry_after=90, rate_limited=True)


@pytest.fixture
def extra_processors(monkeypatch):
    FlakyProcessor.seen = {}
    monkeypatch.setitem(base.registry(), "flaky", FlakyProcessor)
    monkeypatch.setitem(base.registry(), "throttled", ThrottledProcessor)


def result_rows(job: Job) -> list[dict[str, str]]:
    body = b"".join(results.stream(job, "csv")).decode()
    return list(csv.DictReader(io.StringIO(body)))


# --- states --------------------------------------------------------------------------------------

# Sorted: set order differs between processes, and xdist workers must collect the same tests.
LEGAL = sorted((a, b) for a, targets in states.ALLOWED.items() for b in targets)
ILLEGAL = [(a, b) for a in JobStatus.values for b in JobStatus.values if b not in states.ALLOWED[a]]


@pytest.mark.parametrize(("current", "target"), LEGAL)
def test_legal_transition_applies_and_records_an_event(alice, current, target):
    job = JobFactory(owner=alice, status=current, rows=0)
    moved = states.transition(job, target, actor="alice", message="because")
    assert moved.status == target
    assert Job.objects.get(pk=job.pk).status == target
    event = JobEvent.objects.filter(job=job).last()
    assert (event.actor, event.message) == ("alice", "because")
    if target in (JobStatus.COMPLETED, JobStatus.PARTIAL, JobStatus.FAILED, JobStatus.CANCELLED):
        assert moved.finished_at is not None and moved.expires_at > moved.finished_at


@pytest.mark.parametrize(("current", "target"), ILLEGAL)
def test_illegal_transition_is_refused_and_changes_nothing(alice, current, target):
    job = JobFactory(owner=alice, status=current, rows=0)
    with pytest.raises(states.IllegalTransition):
        states.transition(job, target)
    assert Job.objects.get(pk=job.pk).status == current
    assert not JobEvent.objects.filter(job=job).exists()


# --- processing ----------------------------------------------------------------------------------


def test_template_job_runs_to_completed_with_outputs_in_input_order(alice, monkeypatch):
    # 250 rows cross the same boundaries 2,500 did with the real sizes: several ingest batches
    # and several groups of rows per chunk.
    monkeypatch.setattr(ingest_db, "BATCH_ROWS", 100)
    monkeypatch.setattr(results, "BATCH_ROWS", 100)
    n = 250
    job = drive(make_job(alice, rows_text(n), params={"template": "{name}: {text}"}))
    assert job.status == JobStatus.COMPLETED
    assert job.counts == {
        "total": n,
        "pending": 0,
        "running": 0,
        "succeeded": n,
        "failed": 0,
        "cancelled": 0,
    }
    assert job.progress == 1.0 and job.finished_at and job.started_at
    rows = result_rows(job)
    assert [r["name"] for r in rows] == [f"person{i}" for i in range(n)]
    # The output column is named like an input column, so it is told apart in the header.
    assert list(rows[0]) == ["name", "text", "output.text", "_status", "_error"]
    assert rows[7]["output.text"] == "person7: I love item 7"
    assert rows[n - 1]["output.text"] == f"person{n - 1}: I love item {n - 1}"
    assert {r["_status"] for r in rows} == {"succeeded"}
    assert Row.objects.filter(job=job, attempts=1).count() == n


def test_sentiment_job_labels_rows(alice):
    text = "text\nI love this and it is wonderful!\nThis is terrible and I hate it.\nThe sky.\n"
    job = drive(make_job(alice, text, processor="sentiment"))
    rows = result_rows(job)
    assert [r["sentiment_label"] for r in rows] == ["positive", "negative", "neutral"]
    assert float(rows[0]["sentiment_score"]) > 0.5 > -0.5 > float(rows[1]["sentiment_score"])


def test_sentiment_fails_an_empty_text_rather_than_calling_it_neutral(alice):
    text = 'id,text\n1,I love it\n2,\n3,"   "\n'
    job = drive(make_job(alice, text, processor="sentiment"))
    assert (job.status, job.succeeded, job.failed) == (JobStatus.PARTIAL, 1, 2)
    assert [(r["sentiment_label"], r["_error"]) for r in result_rows(job)] == [
        ("positive", ""),
        ("", "The text is empty."),
        ("", "The text is empty."),
    ]


def test_failed_and_retried_rows_end_partial_then_retry_fixes_them(alice, extra_processors):
    job = drive(make_job(alice, rows_text(40), processor="flaky"))
    assert job.status == JobStatus.PARTIAL
    assert (job.succeeded, job.failed) == (36, 4)
    rows = {r["name"]: r for r in result_rows(job)}
    assert rows["person17"]["_error"] == "person17 is unlucky"
    assert rows["person13"]["upper"] == "PERSON13"  # the retryable error was retried
    assert Row.objects.get(job=job, index=13).attempts == 2

    # Retry: failed rows go back to pending in the same job; new outputs replace the failures.
    FlakyProcessor.seen = {}
    monkey_ok = Processor.run_one

    def no_unlucky(self, row):
        return base.RowResult.ok({"upper": row.inputs["name"].upper()})

    FlakyProcessor.run_one = no_unlucky
    try:
        job = services.retry(job, actor="alice")
        assert job.status == JobStatus.PROCESSING and job.failed == 0 and job.pending == 4
        job = drive(job)
    finally:
        FlakyProcessor.run_one = monkey_ok
    assert job.status == JobStatus.COMPLETED and job.succeeded == 40
    assert {r["name"]: r for r in result_rows(job)}["person17"]["upper"] == "PERSON17"
    assert JobEvent.objects.filter(job=job, type="retry", actor="alice").exists()


class HalfCharacterProcessor(Processor):
    """Outputs and errors holding half a character (a lone surrogate), as a buggy one might."""

    name = "halfchar"
    inputs = ["name"]
    outputs = ["x"]

    def process_row(self, row):
        if row.inputs["name"].endswith("7"):
            raise RowError("bad \udc00 row")
        return {"x": row.inputs["name"] + "\ud800"}


def test_half_characters_in_outputs_and_errors_are_stored_as_replacement_characters(
    alice, monkeypatch
):
    # They used to fail the sync point's write every time, and the row ended "the worker died".
    monkeypatch.setitem(base.registry(), "halfchar", HalfCharacterProcessor)
    job = drive(make_job(alice, rows_text(20), processor="halfchar"))
    assert (job.status, job.succeeded, job.failed) == (JobStatus.PARTIAL, 18, 2)
    rows = {r["name"]: r for r in result_rows(job)}
    assert rows["person1"]["x"] == "person1\ufffd"
    assert rows["person17"]["_error"] == "bad \ufffd row"


def test_retry_is_refused_while_processing_and_with_nothing_failed(alice):
    job = make_job(alice, rows_text(10))
    loading.ingest(job.pk)
    with pytest.raises(InvalidState):
        services.retry(Job.objects.get(pk=job.pk), actor="alice")
    job = drive(job)
    with pytest.raises(InvalidState, match="no failed rows"):
        services.retry(job, actor="alice")


def test_pause_stops_new_rows_and_resume_finishes_every_row_exactly_once(alice, settings):
    settings.BATCHHUB_CHUNK_ROWS = 100
    job = make_job(alice, rows_text(1000), concurrency=1)
    loading.ingest(job.pk)
    assert runner.work_once(job.pk).action == "continue"  # one chunk done
    job = services.pause(Job.objects.get(pk=job.pk), actor="alice")
    assert runner.work_once(job.pk).action == "stop"
    job.refresh_from_db()
    assert job.status == JobStatus.PAUSED and job.succeeded == 100 and job.pending == 900
    with pytest.raises(InvalidState):
        services.pause(job, actor="alice")
    job = services.resume(job, actor="bob-the-operator")
    job = drive(job)
    assert job.status == JobStatus.COMPLETED and job.succeeded == 1000
    assert set(Row.objects.filter(job=job).values_list("attempts", flat=True)) == {1}
    types = list(JobEvent.objects.filter(job=job).values_list("type", flat=True))
    assert types.index("paused") < types.index("resumed") < types.index("completed")


def grouped_job(alice, settings, monkeypatch, *, chunk: int, group: int) -> Job:
    """An ingested 1,000-row job of one loop, processed in CPU groups of exactly `group` rows."""
    settings.BATCHHUB_CHUNK_ROWS = chunk
    monkeypatch.setattr(runner, "CPU_GROUP_ROWS", group)
    monkeypatch.setattr(chunk_loop, "CPU_GROUP_MAX", group)
    # The loop shrinks a group whose rows took longer than GROUP_SECONDS on the wall clock, which
    # a loaded machine does to these rows (the reaper test once saw a group of 69, not 100).
    monkeypatch.setattr(chunk_loop, "GROUP_SECONDS", 3600.0)
    job = make_job(alice, rows_text(1000), concurrency=1)
    loading.ingest(job.pk)
    return job


def during_group(monkeypatch, n: int, action) -> None:
    """Run `action` while the CPU loop's n-th group is being processed (after it was started)."""
    calls = {"n": 0}
    real = base.Processor.process

    def process(self, batch):
        calls["n"] += 1
        if calls["n"] == n:
            action()
        return real(self, batch)

    monkeypatch.setattr(base.Processor, "process", process)


def test_pause_seen_inside_a_chunk_leaves_unstarted_rows_pending(alice, settings, monkeypatch):
    job = grouped_job(alice, settings, monkeypatch, chunk=5000, group=50)
    during_group(monkeypatch, 2, lambda: services.pause(Job.objects.get(pk=job.pk), actor="alice"))
    assert runner.work_once(job.pk).action == "stop"
    job.refresh_from_db()
    # The group running when the pause came finished and kept its output; nothing else started.
    assert job.status == JobStatus.PAUSED
    assert (job.succeeded, job.running, job.pending) == (100, 0, 900)
    chunk = Chunk.objects.get(job=job)
    assert chunk.lease_until is None and not chunk.done


def test_cancel_keeps_finished_outputs_and_cancels_the_rest(alice, settings):
    settings.BATCHHUB_CHUNK_ROWS = 100
    job = make_job(alice, rows_text(500), concurrency=1)
    loading.ingest(job.pk)
    runner.work_once(job.pk)
    job = services.cancel(Job.objects.get(pk=job.pk), actor="alice")
    assert runner.work_once(job.pk).action == "stop"
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    assert (job.succeeded, job.cancelled, job.pending) == (100, 400, 0)
    rows = result_rows(job)
    assert [r["_status"] for r in rows[:100]] == ["succeeded"] * 100
    assert rows[0]["output.text"] == "person0!"
    assert {r["_status"] for r in rows[100:]} == {"cancelled"}
    with pytest.raises(InvalidState):
        services.resume(job, actor="alice")


def test_a_cancelled_job_whose_failed_rows_are_retried_ends_cancelled(
    alice, settings, extra_processors
):
    settings.BATCHHUB_CHUNK_ROWS = 20
    job = make_job(alice, rows_text(100), processor="flaky", concurrency=1)
    loading.ingest(job.pk)
    runner.work_once(job.pk)  # the first chunk: person7 and 17 fail, person3 and 13 wait
    job = services.cancel(Job.objects.get(pk=job.pk), actor="alice")
    job = drive(job)
    assert (job.status, job.succeeded, job.failed, job.cancelled) == ("cancelled", 16, 2, 82)

    monkey_ok = FlakyProcessor.run_one
    FlakyProcessor.run_one = lambda self, row: base.RowResult.ok({"upper": "ok"})
    try:
        job = drive(services.retry(job, actor="alice"))
    finally:
        FlakyProcessor.run_one = monkey_ok
    # The retried rows ran; the 82 rows the cancel left did not: still a cancelled job, not a
    # partial one ("completed with failures").
    assert (job.status, job.succeeded, job.failed, job.cancelled) == ("cancelled", 18, 0, 82)
    assert job.finished_at is not None
    assert list(JobEvent.objects.filter(job=job).values_list("type", flat=True))[-3:] == [
        "retry",
        "finalizing",
        "cancelled",
    ]


def test_cancel_leaves_a_cpu_group_in_flight_to_finish_and_counts_stay_exact(
    alice, settings, monkeypatch
):
    job = grouped_job(alice, settings, monkeypatch, chunk=1000, group=100)
    during_group(monkeypatch, 2, lambda: services.cancel(Job.objects.get(pk=job.pk), actor="alice"))
    runner.work_once(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED
    # The group in flight when the cancel came finished and kept its output; the rest cancelled.
    assert (job.succeeded, job.cancelled, job.pending, job.running) == (200, 800, 0, 0)
    assert job.counts == {"total": 1000, **finish.recount(job)}


def test_a_row_running_when_its_worker_died_is_retried_alone_and_fails_at_the_limit(
    alice, settings
):
    settings.BATCHHUB_CHUNK_ROWS = 10
    job = make_job(alice, rows_text(10), max_attempts=3)
    loading.ingest(job.pk)
    # As if a worker died twice in the middle of rows 3..5: they are running, row 4 three times.
    Row.objects.filter(job=job, index__in=[3, 5]).update(status=RowStatus.RUNNING, attempts=1)
    Row.objects.filter(job=job, index=4).update(status=RowStatus.RUNNING, attempts=3)
    Job.objects.filter(pk=job.pk).update(pending=7, running=3)
    job = drive(job)
    assert job.status == JobStatus.PARTIAL
    assert (job.succeeded, job.failed, job.running, job.pending) == (9, 1, 0, 0)
    row = Row.objects.get(job=job, index=4)
    assert row.status == RowStatus.FAILED and "worker died" in row.error
    assert Row.objects.get(job=job, index=3).attempts == 2


def test_a_group_in_flight_when_its_worker_died_is_run_again_in_halves(
    alice, settings, monkeypatch
):
    settings.BATCHHUB_CHUNK_ROWS = 10
    job = make_job(alice, rows_text(10), concurrency=1)
    loading.ingest(job.pk)
    # As if a worker died while processing rows 1..8 of a fast (CPU) group: the rows are still
    # pending, but the chunk says they were in flight and the counters count them as running.
    Chunk.objects.filter(job=job).update(inflight_start=1, inflight_end=9)
    Job.objects.filter(pk=job.pk).update(pending=2, running=8)
    batches: list[list[int]] = []
    real = base.Processor.process

    def spy(self, batch):
        batches.append([row.index for row in batch])
        return real(self, batch)

    monkeypatch.setattr(base.Processor, "process", spy)
    job = drive(job)
    assert job.status == JobStatus.COMPLETED
    assert (job.succeeded, job.running, job.pending) == (10, 0, 0)
    # Halves, then quarters...: each group that survives is done whole; then the other rows.
    assert batches == [[1, 2, 3, 4], [5, 6], [7], [8], [0, 9]]
    # The death was an attempt of each row in flight; the re-run another.
    attempts = dict(Row.objects.filter(job=job).values_list("index", "attempts"))
    assert attempts == {0: 1, 9: 1, **{i: 2 for i in range(1, 9)}}
    assert Chunk.objects.get(job=job).inflight_start is None
    assert JobEvent.objects.filter(job=job, type="recovered", message__contains="rows 2–9").exists()


def test_expired_lease_makes_a_chunk_claimable_again(alice):
    job = make_job(alice, rows_text(10), concurrency=1)
    loading.ingest(job.pk)
    chunk = chunks.claim_chunk(job.pk)
    assert chunk is not None and Chunk.objects.filter(job=job).count() == 1
    assert chunks.claim_chunk(job.pk) is None  # leased: nobody else gets it
    Chunk.objects.filter(pk=chunk.pk).update(lease_until=timezone.now() - timedelta(seconds=1))
    again = chunks.claim_chunk(job.pk)
    assert again is not None and again.pk == chunk.pk and again.claims == 2


def test_run_of_rate_limited_answers_auto_pauses_then_the_reaper_resumes(
    alice, extra_processors, settings
):
    settings.BATCHHUB_AUTOPAUSE_AFTER = 5
    job = make_job(alice, rows_text(20), processor="throttled", concurrency=1)
    loading.ingest(job.pk)
    runner.work_once(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.PAUSED
    assert "429" in job.pause_reason and job.resume_at > timezone.now() + timedelta(seconds=80)
    assert JobEvent.objects.filter(job=job, type="auto_paused").exists()
    # It resumes at the reaper's first run after resume_at: the words promise no exact second.
    event = JobEvent.objects.get(job=job, type="auto_paused")
    assert "resumes by itself once" in event.message and "(at the next periodic check)" in (
        event.message
    )
    assert reaper.reap()["resumed"] == 0  # not yet
    assert reaper.reap(now=job.resume_at + timedelta(seconds=1))["resumed"] == 1
    job.refresh_from_db()
    assert job.status == JobStatus.PROCESSING and job.resume_at is None
    assert JobEvent.objects.filter(job=job, type="auto_resumed", actor="system").exists()


def test_reaper_restarts_a_job_whose_loops_died(
    alice, settings, django_capture_on_commit_callbacks
):
    job = make_job(alice, rows_text(10))
    loading.ingest(job.pk)
    later = timezone.now() + timedelta(seconds=settings.BATCHHUB_LEASE_SECONDS + 5)
    with django_capture_on_commit_callbacks() as callbacks:
        assert reaper.reap(now=later)["restarted"] == 1
    assert callbacks  # loops were enqueued
    assert JobEvent.objects.filter(job=job, type="recovered").exists()


def test_results_neutralise_formulas_but_not_numbers(alice):
    csv_text = 'name,n\n=HYPERLINK("x"),-3.5\n@SUM(A1),+7\n'
    job = drive(make_job(alice, csv_text, params={"template": "{name}"}))
    rows = result_rows(job)
    assert rows[0]["name"] == '\'=HYPERLINK("x")' and rows[0]["n"] == "-3.5"
    assert rows[1]["name"] == "'@SUM(A1)" and rows[1]["n"] == "+7"
    assert rows[0]["text"] == '\'=HYPERLINK("x")'  # the template's output, neutralised too


def test_results_jsonl_and_status_filter(alice, extra_processors):
    import json

    job = drive(make_job(alice, rows_text(20), processor="flaky"))
    lines = b"".join(results.stream(job, "jsonl", "failed")).decode().splitlines()
    objs = [json.loads(line) for line in lines]
    assert [o["row"] for o in objs] == [8, 18]
    assert objs[0] == {
        "row": 8,
        "ref": "8",
        "status": "failed",
        "input": {"name": "person7", "text": "I love item 7"},
        "output": None,
        "error": "person7 is unlucky",
    }
    whole = json.loads(b"".join(results.stream(job, "json")).decode())
    assert len(whole) == 20 and whole[0]["output"] == {"upper": "PERSON0"}


def test_counters_stay_consistent_at_every_step(alice, settings):
    settings.BATCHHUB_CHUNK_ROWS = 50
    job = make_job(alice, rows_text(300))
    loading.ingest(job.pk)
    counters = ("pending", "running", "succeeded", "failed", "cancelled")
    while True:
        step = runner.work_once(job.pk)
        job.refresh_from_db()
        assert sum(job.counts[k] for k in counters) == 300
        assert job.counts == {"total": 300, **finish.recount(job)}
        if step.action == "stop":
            break
    assert job.status == JobStatus.COMPLETED


@pytest.mark.parametrize(
    ("total", "chunk_rows", "loops"),
    [
        (10_000, 960, 2),
        (1_000_000, 5000, 2),
        (1000, 100, 1),
        (7, 5, 3),
        (0, 10, 2),
        (12_345, 480, 4),
    ],
)
def test_chunks_cover_every_row_once_and_shrink_toward_the_end(total, chunk_rows, loops):
    bounds = chunks.chunk_bounds(total, chunk_rows, loops)
    assert [i for start, end in bounds for i in range(start, end)] == list(range(total))
    sizes = [end - start for start, end in bounds]
    assert all(0 < size <= chunk_rows for size in sizes)
    assert sizes == sorted(sizes, reverse=True)  # never growing again
    if loops == 1:
        assert set(sizes[:-1]) <= {chunk_rows}  # one loop: nothing to balance, full chunks
    elif total >= 4 * loops * chunk_rows:
        # The last chunks are small: the loops finish within about one small chunk of each other.
        assert max(sizes[-loops:]) <= max(1, chunk_rows // 16)
        assert sizes[0] == chunk_rows


def test_finalize_corrects_counters_a_crash_left_wrong(alice, monkeypatch):
    # finalize counts the rows before its transaction; counters that do not match that count
    # are counted again under the lock and corrected.
    real_finalize = runner.finalize
    monkeypatch.setattr(runner, "finalize", lambda job_pk: None)
    job = make_job(alice, rows_text(500), concurrency=2)
    loading.ingest(job.pk)
    for _ in range(200):
        if not Chunk.objects.filter(job=job, done=False).exists():
            break
        runner.work_once(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.PROCESSING and job.succeeded == 500
    Job.objects.filter(pk=job.pk).update(succeeded=490, running=7, pending=3)
    finished = real_finalize(job.pk)
    assert finished.status == JobStatus.COMPLETED
    assert (finished.succeeded, finished.running, finished.pending) == (500, 0, 0)
    assert real_finalize(job.pk) is None  # exactly once


def test_a_job_deleted_while_its_loop_finishes_ends_the_loop_quietly(alice):
    # The loop's finalize used to raise DoesNotExist (an ERROR traceback in the worker's log).
    job = make_job(alice, rows_text(5))
    loading.ingest(job.pk)
    counted = finish.recount(job)
    Job.objects.filter(pk=job.pk).delete()
    assert counted["pending"] == 5
    assert finish.finalize(job.pk) is None
    assert runner.work_once(job.pk).action == "stop"


def test_a_job_deleted_while_a_chunk_runs_ends_the_loop_quietly(alice, settings, monkeypatch):
    # A DELETE while a group ran: the chunk's next sync point raised DoesNotExist, an ERROR
    # traceback in the worker's log for every job deleted mid-run.
    job = grouped_job(alice, settings, monkeypatch, chunk=1000, group=100)
    during_group(monkeypatch, 3, lambda: services.delete(Job.objects.get(pk=job.pk), actor="alice"))

    assert runner.work_once(job.pk).action == "stop"
    assert not Job.objects.filter(pk=job.pk).exists()
    assert not Row.objects.filter(job_id=job.pk).exists()


def test_params_the_workers_refuse_fail_the_job_instead_of_every_lease(alice):
    # A job made before a processor's checks grew stricter (here: a width the template now
    # refuses) raised on every claim; its chunk came back each lease and the job stayed
    # "processing" for ever.
    job = make_job(alice, rows_text(5), params={"template": "{name}"})
    loading.ingest(job.pk)
    Job.objects.filter(pk=job.pk).update(params={"template": "{name:>999999999}"})
    job = drive(job, max_steps=5)
    assert job.status == JobStatus.FAILED
    assert job.error_code == "invalid_params"
    assert "pads to more than 1000 characters" in job.error_message
    assert (job.counts["cancelled"], job.counts["pending"], job.counts["running"]) == (5, 0, 0)
    assert not Chunk.objects.filter(job=job, lease_until__isnull=False).exists()
    assert JobEvent.objects.filter(job=job, type="failed").exists()


def test_an_integer_past_64_bits_reaches_the_processor_whole(alice):
    # The rows were read back with orjson, which takes such an integer for a float: the
    # template wrote 1.2345678901234568e+22.
    big = 12345678901234567890123
    job, _ = creation.create_job(
        alice,
        processor="template",
        params={"template": "{n}"},
        source=creation.Source(rows=[{"n": big}, {"n": 7}]),
    )
    job = drive(job)
    assert job.status == JobStatus.COMPLETED
    assert [r["text"] for r in result_rows(job)] == [str(big), "7"]
