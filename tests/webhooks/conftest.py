from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.utils import timezone

from jobs.models import Job, WebhookDelivery

from ..factories import JobFactory, UserFactory, add_rows


@pytest.fixture(autouse=True)
def _webhook_env(settings):
    settings.ROOT_URLCONF = "tests.webhooks.urls"
    settings.CACHES = {
        **settings.CACHES,
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    }
    settings.BATCHHUB_WEBHOOK_ALLOW_PRIVATE = ""
    settings.BATCHHUB_WEBHOOK_TIMEOUT = 2.0
    settings.BATCHHUB_WEBHOOK_THREADS = 0  # each attempt in its task; the threads have their tests


@pytest.fixture
def wh_alice(db):
    return UserFactory(username="wh-alice", email="a@example.com")


@pytest.fixture
def wh_bob(db):
    return UserFactory(username="wh-bob", email="b@example.com")


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    names: list[str] = field(default_factory=list)  # every header name sent, as sent

    def json(self):
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1; answers the next status in `statuses` (the last repeats)."""

    statuses: list[int] = field(default_factory=lambda: [200])
    extra_headers: dict[str, str] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)
    port: int = 0
    before_answer: Callable[[], object] | None = None  # called once the request is read

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
def receiver():
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            index = len(state.requests)
            state.requests.append(
                Received(
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    list(self.headers.keys()),
                )
            )
            if state.before_answer is not None:
                state.before_answer()
            status = state.statuses[min(index, len(state.statuses) - 1)]
            payload = b"ok" if status < 300 else b"receiver says no"
            try:
                self.send_response(status)
                for name, value in state.extra_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except ConnectionError:
                pass  # the sender gave up first (the timeout test)

        def do_GET(self):  # noqa: N802 — a followed redirect would arrive here
            state.requests.append(Received(self.path, dict(self.headers), b""))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


@pytest.fixture
def make_job(wh_alice):
    def make(*, owner=None, rows=3, status="completed", webhook_url=None, **fields) -> Job:
        job = JobFactory(
            owner=owner or wh_alice, rows=rows, status=status, webhook_url=webhook_url, **fields
        )
        add_rows(job, rows, output=lambda i: {"text": f"a{i}"})
        return job

    return make


@pytest.fixture(autouse=True)
def _fast_passwords(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def run_delivery(pk: int, max_attempts: int = 30) -> WebhookDelivery:
    """Run the delivery's task until it is delivered or given up, each wait cut short: the real
    path of every attempt (claim, POST, record, next due time), without the sleeping."""
    from jobs.webhook_tasks import deliver_webhook

    for _ in range(max_attempts):
        result = deliver_webhook.apply(args=(pk,))
        if result.state != "SUCCESS":
            raise AssertionError(f"task ended {result.state}: {result.result!r}") from (
                result.result if isinstance(result.result, BaseException) else None
            )
        delivery = WebhookDelivery.objects.filter(pk=pk).first()
        if delivery is None or delivery.status != WebhookDelivery.Status.PENDING:
            return delivery
        WebhookDelivery.objects.filter(pk=pk).update(next_attempt_at=timezone.now())
    raise AssertionError(f"delivery {pk} still pending after {max_attempts} attempts")


@pytest.fixture
def run_task():
    """`run_task(delivery_pk)`, as the task's message names it, or `run_task(job_pk, event_type,
    webhook_id)`: a delivery made for the job (as on_terminal does) and run to its end."""

    def run(*args):
        if len(args) == 1:
            return run_delivery(args[0])
        job_pk, event_type, webhook_id = args
        job = Job.objects.filter(pk=job_pk).first()
        if job is None:
            return None
        delivery = WebhookDelivery.objects.create(
            job=job, webhook_id=webhook_id, event_type=event_type
        )
        return run_delivery(delivery.pk)

    return run
