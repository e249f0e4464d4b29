"""Webhooks through real workers: a retry that outlives its worker, slow receivers, a queue of
their own, a receiver that hangs."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from jobs import services
from jobs.models import Job, JobEvent, WebhookDelivery
from jobs.webhook_tasks import deliver_webhook
from tests.conftest import make_job
from tests.processors.servers import EchoHandler, LocalServer
from tests.support.hanging import Hanging
from tests.support.worker import flush_broker, wait_for

pytestmark = pytest.mark.e2e


class Receiver:
    """A webhook receiver on 127.0.0.1: answers `statuses` in turn (the last repeats), each after
    `delay` seconds; records when each request came and when its answer left."""

    def __init__(self, statuses=(200,), delay: float = 0.0):
        self.statuses, self.delay = list(statuses), delay
        self.requests: list[dict] = []
        self.answered: list[float] = []
        state = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                index = len(state.requests)
                state.requests.append({"id": self.headers["webhook-id"], "at": time.time()})
                time.sleep(state.delay)
                status = state.statuses[min(index, len(state.statuses) - 1)]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()
                state.answered.append(time.time())

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers(settings):
    settings.BATCHHUB_WEBHOOK_ALLOW_PRIVATE = "127.0.0.0/8"  # for the jobs created here
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def webhook_events(job: Job) -> list[str]:
    return list(
        JobEvent.objects.filter(job=job, type__startswith="webhook.").values_list("type", flat=True)
    )


def test_a_retry_waiting_through_a_worker_restart_is_delivered_once(
    alice, worker_factory, receivers
):
    # A retry used to wait in a Celery countdown: a stopped worker took it along, and a wait past
    # the broker's visibility timeout (Redis) would have come back twice.
    receiver = receivers(statuses=(503, 200))
    first = worker_factory(beat=True)
    job = make_job(alice, "name\na\nb\n", webhook_url=receiver.url)
    first.wait_for(lambda: webhook_events(job) == ["webhook.attempt"], timeout=60)
    first.stop()
    flush_broker()  # whatever the broker held for it is gone, as with a broker that lost it

    # Its wait is over, with no message on its way: as after the 1 h or 8 h waits.
    delivery = WebhookDelivery.objects.get(job=job)
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        next_attempt_at=timezone.now(), message_due_at=None
    )
    second = worker_factory(beat=True)
    second.wait_for(lambda: len(receiver.requests) == 2, timeout=30, message="the retry")
    second.wait_for(
        lambda: WebhookDelivery.objects.get(pk=delivery.pk).status == "delivered", timeout=10
    )

    # A duplicate message (a broker's redelivery, a countdown and the reaper both) sends nothing.
    deliver_webhook.delay(delivery.pk)
    time.sleep(3)
    assert [r["id"] for r in receiver.requests] == [delivery.webhook_id] * 2
    assert webhook_events(job) == ["webhook.attempt", "webhook.delivered"]
    assert WebhookDelivery.objects.get(pk=delivery.pk).attempts == 2


def test_slow_receivers_do_not_hold_up_the_jobs_on_the_worker(alice, worker_factory, receivers):
    # Deliveries ran in the worker's pool processes: two receivers taking 15 s held a five-row
    # job for 29 s.
    slow = receivers(delay=10.0)
    worker = worker_factory()  # two pool processes, as `make run` starts it
    hooked = [make_job(alice, "name\na\n", webhook_url=slow.url) for _ in range(3)]
    # Two are enough to take both pool processes when deliveries run in them.
    worker.wait_for(lambda: len(slow.requests) >= 2, timeout=60, message="slow deliveries")

    started = time.time()
    job = make_job(alice, "name\n" + "".join(f"n{i}\n" for i in range(2000)))
    done = worker.wait_for(
        lambda: (j := Job.objects.get(pk=job.pk)).is_terminal and j, timeout=60, message="the job"
    )
    assert done.status == "completed" and done.succeeded == 2000
    # Finished while every receiver still held its delivery.
    assert not slow.answered, f"job took {time.time() - started:.1f} s"
    worker.wait_for(lambda: len(slow.answered) == 3, timeout=30, message="the slow answers")
    for hook in hooked:
        wait_for(lambda hook=hook: webhook_events(hook) == ["webhook.delivered"], timeout=10)


def test_send_again_and_a_new_job_are_not_queued_behind_the_job_steps(
    alice, worker_factory, receivers, settings
):
    # "Send again" makes its event in a web request, and a new job's ingest is queued by one:
    # both went to the tail of the one queue, behind every loop step queued before them, and an
    # I/O loop's step ran its whole chunk (60 rows a thread: minutes for an LLM).
    import redis

    receiver = receivers()
    worker = worker_factory(beat=True)  # two pool processes and a beat, as `make run` starts it
    done = make_job(alice, "name\na\n", webhook_url=receiver.url)
    worker.wait_for(lambda: len(receiver.requests) == 1, timeout=60, message="the first event")

    with LocalServer(EchoHandler, latency=0.2) as slow:
        params = {"method": "GET", "url": slow.url + "/latency?row={name}", "fields": {"ok": "ok"}}
        rows = "name\n" + "".join(f"n{i}\n" for i in range(8000))
        # Eight loops of 16 threads: two run, the others wait in the queue (a step of each loop
        # runs a chunk of 960 rows, 12 s here, when nothing makes it give its process up).
        busy = [make_job(alice, rows, "http", params, concurrency=128)]
        broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
        worker.wait_for(
            lambda: broker.llen(settings.CELERY_TASK_DEFAULT_QUEUE) >= 6,
            timeout=60,
            message="the job's loops waiting in the queue",
        )
        asked = time.time()
        services.redeliver_webhook(Job.objects.get(pk=done.pk), actor="alice")
        fresh = make_job(alice, "name\na\n")
        worker.wait_for(lambda: len(receiver.requests) == 2, timeout=90, message="send again")
        resent = receiver.requests[1]["at"] - asked
        worker.wait_for(
            lambda: Job.objects.get(pk=fresh.pk).status not in ("queued", "validating"),
            timeout=90,
            message="the new job's ingest",
        )
        started = time.time() - asked
        # Its one short step came with its read, not behind the steps queued before its loops.
        worker.wait_for(
            lambda: Job.objects.get(pk=fresh.pk).status == "completed",
            timeout=90,
            message="the new job's rows",
        )
        finished = time.time() - asked
        waiting = broker.llen(settings.CELERY_TASK_DEFAULT_QUEUE)
        for job in busy:
            services.cancel(Job.objects.get(pk=job.pk), actor="alice")
    # Each at the next free pool process, a step giving its process up within about 10 s once
    # something waits: not behind the six steps ahead (about 40 s).
    assert resent < 20, f"sent again after {resent:.1f} s; {waiting} steps still queued"
    assert started < 20, f"ingested after {started:.1f} s; {waiting} steps still queued"
    assert finished < 20, f"completed after {finished:.1f} s; {waiting} steps still queued"


def test_a_hanging_receiver_does_not_hold_up_a_healthy_ones_event(
    alice, worker_factory, receivers, settings
):
    # Deliveries to receivers that hung took the threads in turn: with 4 threads per pool
    # process, a healthy receiver's event came 67 s late behind 40 of them (here, 16 of them on
    # two pool processes keep the four threads of each busy for a timeout or two).
    settings.BATCHHUB_MAX_ACTIVE_JOBS = 100  # many ending jobs, as from a busy customer
    hanging = Hanging()
    healthy = receivers()
    try:
        worker = worker_factory(BATCHHUB_WEBHOOK_THREADS="4", BATCHHUB_WEBHOOK_TIMEOUT="3")
        stuck = [make_job(alice, "name\na\n", webhook_url=hanging.url) for _ in range(16)]
        worker.wait_for(
            lambda: (
                Job.objects.filter(pk__in=[j.pk for j in stuck], finished_at__isnull=False).count()
                == len(stuck)
            ),
            timeout=120,
            message="the jobs whose receiver hangs",
        )

        job = make_job(alice, "name\na\n", webhook_url=healthy.url)
        worker.wait_for(lambda: healthy.requests, timeout=120, message="the healthy delivery")
        finished = Job.objects.get(pk=job.pk).finished_at.timestamp()
        late = healthy.requests[0]["at"] - finished
        assert late < 2.5, f"the healthy receiver's event came {late:.1f} s after its job ended"
        wait_for(lambda: webhook_events(job) == ["webhook.delivered"], timeout=10)

        # Each delivery to the hanging receiver is still attempted, two at a time per pool
        # process, and waits for its retry as before.
        def timed_out(hook) -> bool:
            return JobEvent.objects.filter(
                job=hook, type="webhook.attempt", message__contains="timed out (3 s)"
            ).exists()

        worker.wait_for(
            lambda: all(timed_out(hook) for hook in stuck), timeout=120, message="every attempt"
        )
        assert hanging.most_open <= 4
        worker.stop()
    finally:
        hanging.close()
