"""What the job page says about progress (jobs/progress.py), the column guess and the estimates."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from jobs import colmatch, estimate, progress
from jobs.models import Job, JobStatus


def _job(**fields) -> Job:
    base = {
        "status": JobStatus.PROCESSING,
        "total": 100,
        "pending": 100,
        "running": 0,
        "succeeded": 0,
        "failed": 0,
        "cancelled": 0,
    }
    base.update(fields)
    return Job(**base)


def _stages(job: Job) -> dict[str, str]:
    return {s["key"]: s["state"] for s in progress.stages(job)}


def test_segments_of_a_cancelled_job_are_not_all_done():
    job = _job(status=JobStatus.CANCELLED, pending=0, succeeded=10, failed=2, cancelled=88)
    seg = {s.key: s for s in progress.segments(job)}
    assert (seg["succeeded"].percent, seg["failed"].percent, seg["cancelled"].percent) == (
        10.0,
        2.0,
        88.0,
    )
    assert seg["cancelled"].offset == 12.0 and seg["pending"].rows == 0
    assert progress.processed(job) == 12
    assert progress.percent_processed(job) == 12.0


def test_segments_never_exceed_the_bar():
    job = _job(total=10, pending=0, succeeded=7, running=6)  # counters mid-update
    assert sum(s.percent for s in progress.segments(job)) <= 100.0


@pytest.mark.django_db
def test_stepper_of_a_cancelled_job_shows_where_it_stopped(alice):
    started = _job(status=JobStatus.CANCELLED, started_at=timezone.now())
    assert _stages(started) == {
        "queued": "done",
        "validating": "done",
        "processing": "cancelled",
        "finalizing": "skipped",
        "done": "cancelled",
    }
    never_started = _job(status=JobStatus.CANCELLED, total=0)
    assert _stages(never_started)["queued"] == "cancelled"
    assert _stages(never_started)["validating"] == "skipped"
    # Cancelled while its file was read (its rows not counted yet): it stopped at reading, as
    # its timeline says, not in the queue.
    reading = Job.objects.create(owner=alice, processor="template", status=JobStatus.CANCELLED)
    reading.events.create(type="validating", message="Reading the file.")
    assert _stages(reading)["queued"] == "done"
    assert _stages(reading)["validating"] == "cancelled"
    assert _stages(reading)["processing"] == "skipped"
    ingest_failed = _job(status=JobStatus.FAILED, total=0)
    assert _stages(ingest_failed)["validating"] == "failed"
    partial = _job(status=JobStatus.PARTIAL, pending=0, succeeded=60, failed=40)
    assert _stages(partial)["finalizing"] == "done"
    assert progress.stages(partial)[-1]["label"] == "Completed with failures"
    # Not "completed" in any sense when no row succeeded.
    all_failed = _job(status=JobStatus.PARTIAL, pending=0, failed=100)
    assert progress.stages(all_failed)[-1]["label"] == "Every row failed"


def test_rate_is_smoothed_and_skips_pauses():
    now = 1_000_000.0
    # 10 rows/s for 20 s, a 60 s pause, then 20 rows/s for the last 10 s.
    samples = [[now - 90 + t, 10 * t] for t in range(0, 21)]
    samples += [[now - 10 + t, 200 + 20 * t] for t in range(0, 11)]
    job = _job(samples=samples)
    # The recent stretch only: the pause is not working time, the rows before it are not recent.
    assert progress.recent_rate(job, now=now) == pytest.approx(20.0)


def test_a_retry_after_a_cancel_does_not_read_the_cancel_as_a_burst():
    # 500 rows/s for 10 s, then a cancel counts 90,000 rows done at once; minutes later a retry
    # puts 2,500 failed rows back (done drops) in the sample the retry wrote. The page said
    # 3,932 rows/s and "in 0 s" for 2,500 rows: the stretch before the retry, cancel burst and all.
    now = 1_000_000.0
    samples = [[now - 300 + t, 500 * t] for t in range(11)]
    samples += [[now - 289, 95_000], [now, 92_500]]
    job = _job(samples=samples)
    assert progress.recent_rate(job, now=now) is None
    # Once the retried rows have run for a few seconds, their rate is the rate.
    job = _job(samples=samples + [[now + t, 92_500 + 480 * t] for t in range(1, 5)])
    assert progress.recent_rate(job, now=now + 4) == pytest.approx(480.0, rel=0.1)


def test_rate_needs_a_few_seconds_and_is_none_unless_processing():
    now = 1_000_000.0
    first_chunk = _job(samples=[[now - 1, 0], [now, 730]])  # one chunk landing at once
    assert progress.recent_rate(first_chunk, now=now) is None
    paused = _job(status=JobStatus.PAUSED, samples=[[now - 20 + t, 10 * t] for t in range(21)])
    assert progress.recent_rate(paused, now=now) is None
    assert progress.eta(paused, 10.0) is None
    stalled = _job(samples=[[now - 100 + t, 10 * t] for t in range(21)])
    assert progress.recent_rate(stalled, now=now) == 0.0


def test_eta_counts_rows_still_to_run():
    job = _job(pending=80, running=20, succeeded=0)
    assert progress.eta(job, 10.0) == timedelta(seconds=10)
    assert progress.eta(job, None) is None


@pytest.mark.django_db
def test_a_queued_job_says_what_it_waits_for(alice, settings):
    settings.BATCHHUB_MAX_ACTIVE_JOBS = 7
    job = Job.objects.create(owner=alice, processor="template", status=JobStatus.QUEUED)
    assert progress.waiting_for(job) == "Waiting for a worker to read the input file."
    later = progress.waiting_for(job, now=timezone.now() + timedelta(minutes=1))
    assert "Every worker is busy or none is running" in later
    assert "0 other active jobs (the limit is 7 active jobs per account)" in later
    job.status = JobStatus.PROCESSING
    job.pending, job.running, job.started_at = 10, 0, timezone.now() - timedelta(minutes=1)
    assert "Waiting for a free worker" in progress.waiting_for(job)
    job.running = 4
    assert progress.waiting_for(job) == ""


def test_column_guess_by_name_then_content():
    preview = [{"id": "1", "site": "https://a.example", "body": "A long sentence here.", "n": "3"}]
    assert colmatch.best_column("text", ["id", "text"], preview) == ("text", "same name")
    assert colmatch.best_column("text", ["id", "Review Text"], preview)[0] == "Review Text"
    assert colmatch.best_column("url", ["id", "homepage"], preview)[0] == "homepage"
    cols = ["id", "site", "body", "n"]
    assert colmatch.best_column("url", ["id", "site2", "n"], [{"site2": "http://x"}])[0] == "site2"
    assert colmatch.best_column("text", cols, preview)[0] == "body"
    assert colmatch.best_column("url", ["id", "n"], [{"id": "1", "n": "2"}]) == ("", "")


@pytest.mark.django_db
def test_estimate_from_history_and_from_sample(alice):
    now = timezone.now()
    finished = {
        "owner": alice,
        "processor": "sentiment",
        "status": JobStatus.COMPLETED,
        "started_at": now - timedelta(seconds=10),
        "finished_at": now,
    }
    # Ten seconds for 3 rows: start-up, not a rate; it is left out.
    Job.objects.create(**finished, total=3, succeeded=3, worked_seconds=10.0)
    assert estimate.from_history(alice, "sentiment", 5000) is None
    # 1,000 rows in 10 s without samples (done within one); then 2,000 in 1 s by its samples,
    # with a minute's wait (a pause) between them left out.
    Job.objects.create(**finished, total=1000, succeeded=990, failed=10, worked_seconds=10.0)
    t = now.timestamp()
    Job.objects.create(
        **finished, total=2000, succeeded=2000, samples=[[t - 62, 0], [t - 61, 2000], [t, 2000]]
    )
    got = estimate.from_history(alice, "sentiment", 5000)
    assert got.rate == pytest.approx(3000 / 11)
    assert got.duration == timedelta(seconds=5000 / (3000 / 11))
    assert got.source == "your last 2 sentiment jobs"
    # A long slow job whose samples kept only its last stretch: its rows over its worked time.
    Job.objects.create(
        **finished,
        total=14_400,
        succeeded=14_400,
        worked_seconds=7200.0,
        samples=[[t - 1, 14_000], [t, 14_002]],
    )
    assert estimate.from_history(alice, "sentiment", 5000).rate == pytest.approx(
        (3000 + 14_400) / (11 + 7200)
    )
    assert estimate.from_history(alice, "llm", 5000) is None

    io = estimate.from_sample(1000, 10, 2.0, io_bound=True, concurrency=8)
    assert io.rate == pytest.approx(4.0)  # 8 side by side, 2 s each
    # A CPU processor's few rows are mostly its start-up: no rate from them.
    assert estimate.from_sample(1000, 10, 0.5, io_bound=False, concurrency=8) is None
    rows = [{"usage": {"total_tokens": 100}}, {"usage": {"total_tokens": 140}}, {"usage": None}]
    assert estimate.tokens(rows, 1000) == {"per_row": 120, "total": 120_000}
    assert estimate.tokens([{"usage": None}], 1000) is None


@pytest.mark.parametrize("zone", ["UTC", "America/New_York"])
def test_the_eta_is_written_in_utc_as_the_date_filter_writes_it_in_utc(settings, zone):
    from datetime import UTC, datetime

    from django.template.defaultfilters import date
    from django.utils import timezone as tz

    from jobs.templatetags.jobs_tags import utc_iso, utc_seconds

    eta = datetime(2026, 12, 7, 23, 30, 5, 123456, tzinfo=UTC)
    with tz.override("UTC"):
        as_before = (date(eta, "c"), date(eta, "Y-m-d H:i:s"))
    settings.TIME_ZONE = zone
    with tz.override(zone):  # the page labels the ETA "UTC": it stays UTC whatever the zone
        assert (utc_iso(eta), utc_seconds(eta)) == as_before
    assert as_before == ("2026-12-07T23:30:05.123456+00:00", "2026-12-07 23:30:05")
    assert utc_iso(None) == utc_seconds(None) == ""


@pytest.mark.django_db
def test_worked_time_leaves_out_pauses_and_the_wait_before_a_retry(alice, monkeypatch):
    from jobs import states
    from tests.conftest import make_job, rows_text

    start = timezone.now()
    clock = {"at": start}
    monkeypatch.setattr("django.utils.timezone.now", lambda: clock["at"])
    job = make_job(alice, rows_text(3))

    def at(seconds: float, status: str) -> Job:
        clock["at"] = start + timedelta(seconds=seconds)
        return states.transition(job.pk, status)

    at(0, JobStatus.VALIDATING)
    at(1, JobStatus.PROCESSING)
    paused = at(11, JobStatus.PAUSED)
    clock["at"] = start + timedelta(seconds=60)
    assert paused.worked() == timedelta(seconds=10)  # a pause does not count
    at(71, JobStatus.PROCESSING)
    clock["at"] = start + timedelta(seconds=73)
    assert Job.objects.get(pk=job.pk).worked() == timedelta(seconds=12)  # the stretch so far
    at(75, JobStatus.FINALIZING)
    done = at(76, JobStatus.PARTIAL)
    assert done.worked() == timedelta(seconds=15)
    # A retry an hour later: its own stretch is added, the hour is not.
    at(3676, JobStatus.PROCESSING)
    at(3679, JobStatus.FINALIZING)
    done = at(3680, JobStatus.COMPLETED)
    assert done.worked() == done.duration == timedelta(seconds=19)
    Job.objects.filter(pk=job.pk).update(succeeded=3)
    assert progress.average_rate(Job.objects.get(pk=job.pk)) == pytest.approx(3 / 19)
    # A job started before worked time was kept: its span, as before.
    Job.objects.filter(pk=job.pk).update(worked_seconds=None, status=JobStatus.PARTIAL)
    assert Job.objects.get(pk=job.pk).worked() == timedelta(seconds=3679)
    # Retried a day later: its span counts as work, the day does not.
    at(3679 + 86_400, JobStatus.PROCESSING)
    at(3679 + 86_402, JobStatus.FINALIZING)
    again = at(3679 + 86_403, JobStatus.COMPLETED)
    assert again.worked() == timedelta(seconds=3679 + 3)
