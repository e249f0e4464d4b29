"""A receiver that hangs takes a few of a process's sender threads, never all of them."""

from __future__ import annotations

import re
import threading
import time

import pytest
from django.db import connection

from jobs import webhook_deliveries, webhooks
from jobs.models import JobEvent, WebhookDelivery
from jobs.webhook_tasks import deliver_webhook, senders
from tests.support.hanging import Hanging


@pytest.fixture
def hanging():
    receiver = Hanging()
    yield receiver
    receiver.close()


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_healthy_receiver_is_not_kept_waiting_behind_a_hanging_one(
    receiver, hanging, make_job, settings
):
    # Deliveries to receivers that hung took the threads in turn: with 4 threads, a healthy
    # receiver's event came 67 s late behind 40 of them.
    if connection.vendor != "postgresql":
        pytest.skip("sender threads writing at once need PostgreSQL (in-memory SQLite refuses)")
    settings.BATCHHUB_WEBHOOK_ALLOW_PRIVATE = "127.0.0.1/32"
    settings.BATCHHUB_WEBHOOK_THREADS = 4
    settings.BATCHHUB_WEBHOOK_THREADS_PER_DESTINATION = 2
    settings.BATCHHUB_WEBHOOK_TIMEOUT = 1.5
    stuck = [
        WebhookDelivery.objects.create(
            job=make_job(webhook_url=hanging.url),
            webhook_id=f"msg_h{i}",
            event_type="job.completed",
        )
        for i in range(12)
    ]
    healthy = WebhookDelivery.objects.create(
        job=make_job(webhook_url=receiver.url), webhook_id="msg_ok", event_type="job.completed"
    )

    try:
        started = time.monotonic()
        for delivery in [*stuck, healthy]:  # all due at once, the healthy one last in line
            deliver_webhook.apply(args=(delivery.pk,))
        assert wait_until(lambda: receiver.requests, timeout=10)
        late = time.monotonic() - started
        assert late < 2.0, f"the healthy receiver's event came {late:.1f} s late"
        assert wait_until(
            lambda: WebhookDelivery.objects.get(pk=healthy.pk).status == "delivered", timeout=5
        )

        # Every delivery to the hanging receiver is still attempted, two at a time, and waits
        # for its retry as before.
        attempted = WebhookDelivery.objects.filter(pk__in=[d.pk for d in stuck], attempts=1)
        assert wait_until(lambda: attempted.count() == len(stuck), timeout=30)
    finally:
        senders.drain()
    assert hanging.requests == len(stuck) and hanging.most_open == 2
    for delivery in stuck:
        delivery.refresh_from_db()
        assert delivery.status == "pending" and delivery.claim == ""
        event = JobEvent.objects.get(job=delivery.job_id, type__startswith="webhook.")
        assert event.type == "webhook.attempt"
        assert re.search(
            r"timed out \(1\.5 s\) after \d+ ms \(attempt 1\); retrying in", event.message
        )


# --- the threads' bookkeeping, without a database -------------------------------------------------


class Attempts:
    """Stands in for webhook_deliveries: each delivery's destination, and attempts that last
    until the test lets them end."""

    def __init__(self, destinations: dict[int, str]) -> None:
        self.destinations = destinations
        self.started: list[int] = []
        self.ended: list[int] = []
        self.go = {pk: threading.Event() for pk in destinations}

        # A cancelled job's event waits for its running rows until the test says they ended:
        # in settle() when called first, else inside run(), as webhook_deliveries does.
        self.rows_running = {pk: threading.Event() for pk in destinations}
        self.settled: set[int] = set()
        for event in self.rows_running.values():
            event.set()

    def destination(self, pk: int) -> str | None:
        return self.destinations[pk]

    def settle(self, pk: int) -> None:
        self.rows_running[pk].wait(10)
        self.settled.add(pk)

    def run(self, pk: int) -> bool:
        if pk not in self.settled:
            self.settle(pk)
        self.started.append(pk)
        self.go[pk].wait(10)
        self.ended.append(pk)
        return True


@pytest.fixture
def attempts(monkeypatch, settings):
    settings.BATCHHUB_WEBHOOK_THREADS = 4
    settings.BATCHHUB_WEBHOOK_THREADS_PER_DESTINATION = 2
    fake = Attempts({1: "a", 2: "a", 3: "a", 4: "a", 5: "b", 6: None})
    monkeypatch.setattr(webhook_deliveries, "destination", fake.destination)
    monkeypatch.setattr(webhook_deliveries, "run", fake.run)
    monkeypatch.setattr(webhook_deliveries, "settle", fake.settle)
    yield fake
    for event in [*fake.go.values(), *fake.rows_running.values()]:
        event.set()
    senders.drain()


def test_a_destinations_deliveries_wait_their_turn_beside_the_others(attempts):
    for pk in (1, 2, 3, 4, 5, 6):
        assert senders.submit(pk)

    def to_a() -> list[int]:
        return [pk for pk in attempts.started if attempts.destinations[pk] == "a"]

    assert wait_until(lambda: len(attempts.started) == 4, timeout=5)
    time.sleep(0.2)
    assert len(to_a()) == 2 and {5, 6} <= set(attempts.started)  # threads free, not for "a"

    first, second = to_a()
    attempts.go[first].set()  # its thread takes a delivery waiting for "a"
    assert wait_until(lambda: len(to_a()) == 3, timeout=5)
    time.sleep(0.2)
    assert len(to_a()) == 3
    attempts.go[second].set()
    assert wait_until(lambda: len(to_a()) == 4, timeout=5)
    for event in attempts.go.values():
        event.set()
    assert wait_until(lambda: len(attempts.ended) == 6, timeout=5)

    assert senders.submit(1)  # the destination's threads were all given back
    assert wait_until(lambda: attempts.started.count(1) == 2, timeout=5)


def test_a_second_message_for_a_waiting_delivery_adds_no_turn(attempts):
    for pk in (1, 2):
        senders.submit(pk)
    assert wait_until(lambda: sorted(attempts.started) == [1, 2], timeout=5)
    for _ in range(3):
        senders.submit(3)
    time.sleep(0.2)
    for pk in (1, 2, 3):
        attempts.go[pk].set()
    assert wait_until(lambda: len(attempts.ended) == 3, timeout=5)
    time.sleep(0.2)
    assert attempts.started.count(3) == 1


def test_a_stopping_process_starts_none_of_the_waiting_deliveries(attempts):
    for pk in (1, 2):
        senders.submit(pk)
    assert wait_until(lambda: sorted(attempts.started) == [1, 2], timeout=5)
    for pk in (3, 4):
        senders.submit(pk)
    time.sleep(0.2)
    threading.Timer(0.3, lambda: (attempts.go[1].set(), attempts.go[2].set())).start()
    senders.drain()  # the two under way finish; 3 and 4 stay due in their rows for the reaper
    assert sorted(attempts.ended) == [1, 2] and sorted(attempts.started) == [1, 2]


def test_cancelled_jobs_events_wait_for_their_rows_without_holding_the_destinations_threads(
    attempts,
):
    # Their wait (up to 30 s for the job's running rows) held one of the receiver's two threads:
    # the events of jobs cancelled together went out in turn, half a minute each.
    for pk in (1, 2):
        attempts.rows_running[pk].clear()  # jobs cancelled, rows still running
        senders.submit(pk)
    time.sleep(0.2)
    senders.submit(3)  # another event for the same receiver, ready now
    assert wait_until(lambda: 3 in attempts.started, timeout=2)
    attempts.go[3].set()
    for pk in (1, 2):
        attempts.rows_running[pk].set()
        attempts.go[pk].set()
    assert wait_until(lambda: sorted(attempts.ended) == [1, 2, 3], timeout=5)


def test_a_destination_is_scheme_host_and_port():
    assert (
        webhooks.destination("https://Hooks.Example.com/a?b=1") == "https://hooks.example.com:443"
    )
    assert (
        webhooks.destination("https://hooks.example.com:443/x") == "https://hooks.example.com:443"
    )
    assert webhooks.destination("http://hooks.example.com/") == "http://hooks.example.com:80"
    assert webhooks.destination("http://hooks.example.com:8080/") == "http://hooks.example.com:8080"
    assert webhooks.destination("https://[::1]:9000/") == "https://[::1]:9000"
    assert (
        webhooks.destination("http://hooks.example.com:99999/") == "http://hooks.example.com:99999/"
    )
