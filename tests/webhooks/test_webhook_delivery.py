"""Delivery to a real HTTP receiver on 127.0.0.1: signature, retries, 410, redirects, timeouts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from jobs import states, webhook_deliveries, webhooks
from jobs.models import Job, JobEvent, UserSettings, WebhookDelivery
from jobs.webhook_tasks import deliver_webhook


def verify_standard_webhook(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """The spec's algorithm, written independently of jobs/webhooks.py."""
    key = base64.b64decode(secret[len("whsec_") :])
    signed = (
        headers["webhook-id"].encode() + b"." + headers["webhook-timestamp"].encode() + b"." + body
    )
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    given = [s.split(",", 1) for s in headers["webhook-signature"].split(" ")]
    return any(version == "v1" and hmac.compare_digest(sig, expected) for version, sig in given)


@pytest.fixture
def allow_loopback(settings):
    settings.BATCHHUB_WEBHOOK_ALLOW_PRIVATE = "127.0.0.1/32"


def events(job, prefix="webhook."):
    return list(JobEvent.objects.filter(job=job, type__startswith=prefix).order_by("at", "id"))


def test_receiver_gets_signed_event_that_verifies(run_task, receiver, make_job, allow_loopback):
    job = make_job(rows=3, webhook_url=receiver.url)

    run_task(job.pk, "job.completed", "msg_test1")

    assert len(receiver.requests) == 1
    req = receiver.requests[0]
    secret = UserSettings.get_or_create_for(job.owner).webhook_secret
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]{43}=", secret)
    assert verify_standard_webhook(secret, req.headers, req.body)
    assert not verify_standard_webhook(
        "whsec_" + base64.b64encode(b"x" * 32).decode(), req.headers, req.body
    )
    assert req.headers["webhook-id"] == "msg_test1"
    assert abs(int(req.headers["webhook-timestamp"]) - time.time()) < 60
    assert req.headers["content-type"] == "application/json"
    # One user-agent, the one docs/webhooks.md names (the client's own was sent beside it).
    assert req.headers["user-agent"] == "BatchHub-Webhooks/1.0"
    assert [n.lower() for n in req.names].count("user-agent") == 1

    event = req.json()
    assert event["type"] == "job.completed"
    assert event["timestamp"].endswith("Z")
    assert event["job"]["id"] == job.public_id
    assert event["job"]["status"] == "completed"
    assert event["job"]["counts"]["succeeded"] == 3
    assert event["data"][0] == {
        "row": 1,
        "ref": "1",
        "status": "succeeded",
        "input": {"a": "a0", "b": "b0"},
        "output": {"text": "a0"},
        "error": None,
    }
    assert [r["row"] for r in event["data"]] == [1, 2, 3]

    (delivered,) = events(job)
    assert delivered.type == "webhook.delivered"
    assert delivered.actor == "system"
    assert delivered.message.startswith(f"POST {receiver.url} → 200 in ")
    assert delivered.message.endswith("(attempt 1)")
    assert delivered.data["status_code"] == 200 and delivered.data["webhook_id"] == "msg_test1"
    assert delivered.data["attempt"] == 1 and delivered.data["duration_ms"] >= 0


def test_rows_are_left_out_of_big_jobs(run_task, receiver, make_job, allow_loopback, monkeypatch):
    monkeypatch.setattr(webhooks, "MAX_INLINE_ROWS", 2)
    job = make_job(rows=3, webhook_url=receiver.url)
    run_task(job.pk, "job.completed", "msg_big")
    assert "data" not in receiver.requests[0].json()


def test_fails_twice_then_succeeds_three_attempts_in_events(
    run_task, receiver, make_job, allow_loopback
):
    receiver.statuses = [500, 503, 204]
    job = make_job(webhook_url=receiver.url)

    # Each attempt is the task's real path; run_task cuts the waits between them short.
    delivery = run_task(job.pk, "job.completed", "msg_retry")

    assert len(receiver.requests) == 3
    # Same webhook-id on every attempt: receivers deduplicate on it.
    assert {r.headers["webhook-id"] for r in receiver.requests} == {"msg_retry"}
    secret = UserSettings.get_or_create_for(job.owner).webhook_secret
    assert all(verify_standard_webhook(secret, r.headers, r.body) for r in receiver.requests)

    recorded = events(job)
    assert [e.type for e in recorded] == ["webhook.attempt", "webhook.attempt", "webhook.delivered"]
    assert [e.data["attempt"] for e in recorded] == [1, 2, 3]
    assert [e.data["status_code"] for e in recorded] == [500, 503, 204]
    assert "→ 500 in" in recorded[0].message and "retrying in" in recorded[0].message
    assert recorded[0].data["response"] == "receiver says no"
    assert recorded[1].message.startswith(f"POST {receiver.url} → 503 in ")
    assert (delivery.status, delivery.attempts) == ("delivered", 3)


def test_410_gone_stops_retrying(run_task, receiver, make_job, allow_loopback):
    receiver.statuses = [410, 200]
    job = make_job(status="failed", webhook_url=receiver.url)
    run_task(job.pk, "job.failed", "msg_gone")

    assert len(receiver.requests) == 1
    (failed,) = events(job)
    assert failed.type == "webhook.failed"
    assert failed.data["status_code"] == 410
    assert "410 Gone" in failed.message and "giving up" in failed.message


def test_redirect_is_not_followed(receiver, make_job, allow_loopback):
    receiver.statuses = [302]
    receiver.extra_headers = {"Location": f"http://127.0.0.1:{receiver.port}/elsewhere"}
    job = make_job(webhook_url=receiver.url)

    attempt = webhooks.deliver_once(job, "job.completed", "msg_redirect", 1)

    assert [r.path for r in receiver.requests] == ["/hook"]  # nothing reached /elsewhere
    assert attempt.status_code == 302 and not attempt.delivered and attempt.retry
    assert attempt.error == "redirects are not followed"


def test_timeout_is_a_retryable_failure(receiver, make_job, allow_loopback, settings, monkeypatch):
    settings.BATCHHUB_WEBHOOK_TIMEOUT = 0.3
    import socketserver

    original = socketserver.StreamRequestHandler.setup

    def slow_setup(self):
        time.sleep(0.6)  # twice the timeout; the server's close waits for this handler
        original(self)

    monkeypatch.setattr(socketserver.StreamRequestHandler, "setup", slow_setup)
    job = make_job(webhook_url=receiver.url)
    attempt = webhooks.deliver_once(job, "job.completed", "msg_slow", 1)
    assert attempt.retry and not attempt.delivered
    assert attempt.error.startswith("timed out")
    assert attempt.duration_ms < 1500


def test_connection_refused_is_retried(make_job, allow_loopback):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    job = make_job(webhook_url=f"http://127.0.0.1:{port}/hook")
    attempt = webhooks.deliver_once(job, "job.completed", "msg_refused", 1)
    assert attempt.retry and attempt.status_code is None
    assert attempt.error.startswith("connection failed (NewConnectionError: ")
    assert "Connection refused" in attempt.error


def test_gives_up_after_the_24h_window(run_task, receiver, make_job, allow_loopback):
    receiver.statuses = [503]
    job = make_job(webhook_url=receiver.url)
    delivery = WebhookDelivery.objects.create(
        job=job,
        webhook_id="msg_late",
        event_type="job.completed",
        attempts=12,
        first_attempt_at=timezone.now() - timedelta(hours=24, seconds=1),
    )
    run_task(delivery.pk)
    assert len(receiver.requests) == 1
    assert [e.type for e in events(job)] == ["webhook.failed"]


def test_retry_schedule_lasts_at_least_24_hours():
    times = webhooks.nominal_schedule()
    assert times[0] == 5 and times[1] == 35  # 5 s, then 30 s more
    gaps = [b - a for a, b in zip([0, *times], times, strict=False)]
    assert gaps == sorted(gaps)  # backoff never shrinks
    assert max(gaps) == 8 * 3600
    assert times[-2] < 24 * 3600 <= times[-1]  # the last retry is past the 24 h mark
    assert len(times) <= 15


def test_retry_delay_jitter_and_window():
    assert webhooks.retry_delay(1, 0, rand=0.0) == 5
    assert webhooks.retry_delay(1, 0, rand=1.0) == 6  # +20 % at most
    assert webhooks.retry_delay(3, 100, rand=0.5) == 132
    assert webhooks.retry_delay(50, 1000, rand=0.0) == 8 * 3600
    assert webhooks.retry_delay(2, 24 * 3600) is None
    samples = {webhooks.retry_delay(4, 0) for _ in range(50)}
    assert len(samples) > 1 and all(600 <= s <= 720 for s in samples)


def test_deleted_job_is_not_delivered(run_task, receiver, make_job, allow_loopback):
    job = make_job(webhook_url=receiver.url)
    pk = job.pk
    job.delete()
    run_task(pk, "job.completed", "msg_deleted")
    assert receiver.requests == []


def test_rotation_signs_with_both_secrets_for_a_day(run_task, receiver, make_job, allow_loopback):
    job = make_job(webhook_url=receiver.url)
    prefs = UserSettings.get_or_create_for(job.owner)
    old = prefs.webhook_secret
    new = prefs.rotate_webhook_secret()
    assert new != old
    run_task(job.pk, "job.completed", "msg_rot")
    req = receiver.requests[0]
    assert len(req.headers["webhook-signature"].split(" ")) == 2
    assert verify_standard_webhook(new, req.headers, req.body)
    assert verify_standard_webhook(old, req.headers, req.body)


# --- from the state machine -----------------------------------------------------------------------


def test_on_terminal_enqueues_after_commit_only(
    make_job, monkeypatch, django_capture_on_commit_callbacks
):
    calls = []
    monkeypatch.setattr(deliver_webhook, "delay", lambda *args: calls.append(args))
    job = make_job(webhook_url="https://hooks.example.com/x")

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        webhook_deliveries.on_terminal(job)
    assert calls == []  # nothing sent before the transaction commits
    for callback in callbacks:
        callback()
    ((pk,),) = calls
    delivery = WebhookDelivery.objects.get(pk=pk)
    assert delivery.job == job and delivery.event_type == "job.completed"
    assert delivery.status == "pending" and delivery.attempts == 0
    assert re.fullmatch(r"msg_[0-9A-HJKMNP-TV-Z]{26}", delivery.webhook_id)

    job.webhook_url = None
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        webhook_deliveries.on_terminal(job)
    assert callbacks == []


def test_transition_to_terminal_delivers(
    run_task, receiver, make_job, allow_loopback, monkeypatch, django_capture_on_commit_callbacks
):
    """The engine's transition() → on_terminal → task → receiver, end to end in one process."""
    monkeypatch.setattr(deliver_webhook, "delay", lambda *args: run_task(*args))
    job = make_job(status="finalizing", webhook_url=receiver.url)

    with django_capture_on_commit_callbacks(execute=True):
        states.transition(job, "partial")

    assert len(receiver.requests) == 1
    event = receiver.requests[0].json()
    assert event["type"] == "job.partial"
    assert event["job"]["expires_at"].endswith("Z")
    assert [e.type for e in events(job)] == ["webhook.delivered"]


def test_payload_is_compact_json_and_parses(make_job):
    job = make_job(rows=1)
    body = webhooks.encode(webhooks.build_event(job, "job.completed"))
    assert json.loads(body)["job"]["id"] == job.public_id
    assert b", " not in body.split(b'"data"')[0]


def rows_end_at_look(monkeypatch, job: Job, look: int, **counts) -> list:
    """The cancelled job's running rows end (its counters become `counts`) at the settle wait's
    `look`-th look; the looks are recorded in the list returned."""
    looks: list = []
    real = webhook_deliveries.settle_delay

    def settle_delay(*args):
        looks.append(args)
        if len(looks) == look:
            Job.objects.filter(pk=job.pk).update(**counts)
        return real(*args)

    monkeypatch.setattr(webhook_deliveries, "settle_delay", settle_delay)
    monkeypatch.setattr(webhook_deliveries, "SETTLE_EVERY", 0.01)
    return looks


def test_a_cancelled_jobs_event_waits_for_its_running_rows_to_finish(
    run_task, receiver, make_job, allow_loopback, monkeypatch
):
    # A cancel lets rows already running finish: the event used to go out at once, its job
    # object saying "running": 1000 and counts that changed after it.
    job = make_job(rows=10, status="cancelled", webhook_url=receiver.url)
    Job.objects.filter(pk=job.pk).update(running=4, succeeded=2, cancelled=4, pending=0)
    checks = rows_end_at_look(monkeypatch, job, 3, running=0, succeeded=6)
    run_task(job.pk, "job.cancelled", "msg_settle")

    assert len(checks) == 3 and len(receiver.requests) == 1
    sent = receiver.requests[0].json()["job"]
    assert (sent["status"], sent["counts"]["running"], sent["counts"]["succeeded"]) == (
        "cancelled",
        0,
        6,
    )
    attempts = [e.data["attempt"] for e in events(job) if e.type == "webhook.delivered"]
    assert attempts == [1]  # the waits are not attempts


def test_the_wait_ends_after_a_bound_if_rows_never_finish(monkeypatch, make_job):
    job = make_job(rows=2, status="cancelled")
    Job.objects.filter(pk=job.pk).update(running=2)
    now = time.time()
    assert (
        webhook_deliveries.settle_delay(job.pk, "job.cancelled", now)
        == webhook_deliveries.SETTLE_EVERY
    )
    assert (
        webhook_deliveries.settle_delay(
            job.pk, "job.cancelled", now - webhook_deliveries.SETTLE_SECONDS
        )
        is None
    )
    assert webhook_deliveries.settle_delay(job.pk, "job.completed", now) is None


def test_settle_waits_for_a_cancelled_jobs_rows_before_any_thread_of_its_receiver(
    monkeypatch, make_job
):
    # The sender's threads call it before taking one of the destination's: only an unattempted
    # job.cancelled event waits, and only while its job's rows run.
    job = make_job(rows=3, status="cancelled")
    Job.objects.filter(pk=job.pk).update(running=2, pending=0, cancelled=1)
    looks = rows_end_at_look(monkeypatch, job, 2, running=0, succeeded=2)
    cancelled = WebhookDelivery.objects.create(job=job, webhook_id="a", event_type="job.cancelled")
    webhook_deliveries.settle(cancelled.pk)
    assert len(looks) == 2  # waited once, then the rows had ended
    # Attempted once already, or another event: nothing to wait for.
    WebhookDelivery.objects.filter(pk=cancelled.pk).update(attempts=1)
    Job.objects.filter(pk=job.pk).update(running=2)
    webhook_deliveries.settle(cancelled.pk)
    assert len(looks) == 2
