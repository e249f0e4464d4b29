"""Fixtures shared by the whole suite: the users alice and bob, clients, and engine drivers."""

from __future__ import annotations

import io
import os
import socket
from typing import Any
from urllib.parse import urlsplit

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

PASSWORD = "correct horse battery staple"


def pytest_collection_modifyitems(config, items):
    # `make test` keeps to its time budget: the longer runs marked slow are for BATCHHUB_SLOW=1.
    if os.environ.get("BATCHHUB_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set BATCHHUB_SLOW=1 to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _media_root(settings, tmp_path):
    # Uploads of the jobs a test makes, kept with the test's files: under the data dir they piled
    # up beside a `make run`'s own, for jobs its database never had.
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def alice(db):
    from .factories import UserFactory

    return UserFactory(username="alice", password=PASSWORD)


@pytest.fixture
def bob(db):
    from .factories import UserFactory

    return UserFactory(username="bob", password=PASSWORD)


@pytest.fixture
def client_alice(client, alice):
    client.force_login(alice)
    return client


@pytest.fixture
def client_bob(django_user_model, bob):
    from django.test import Client

    c = Client()
    c.force_login(bob)
    return c


def _api_client_for(user):
    from rest_framework.test import APIClient

    from .factories import APIKeyFactory

    raw = APIKeyFactory(owner=user, name="tests").raw
    c = APIClient()
    c.credentials(HTTP_X_API_KEY=raw)
    c.raw_key = raw
    return c


@pytest.fixture
def api_alice(alice):
    return _api_client_for(alice)


@pytest.fixture
def api_bob(bob):
    return _api_client_for(bob)


def csv_upload(text: str, name: str = "input.csv") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode("utf-8"), content_type="text/csv")


def make_job(
    user,
    csv_text: str,
    processor: str = "template",
    params: dict[str, Any] | None = None,
    **kwargs,
):
    """Create a job through the service layer (validation included), without running it."""
    from jobs import creation

    if params is None and processor == "template":
        params = {"template": "{name}!"}
    params = params or {}
    job, _ = creation.create_job(
        user,
        processor=processor,
        params=params,
        source=creation.Source(upload=csv_upload(csv_text)),
        actor=user.get_username(),
        **kwargs,
    )
    return job


def drive(job, *, max_steps: int = 10_000):
    """Run a job in this process until it leaves `processing`: ingest, then worker-loop steps."""
    from jobs import runner
    from jobs.ingest import loading
    from jobs.models import Chunk, Job, JobStatus

    job.refresh_from_db()
    if job.status in (JobStatus.QUEUED, JobStatus.VALIDATING):
        loading.ingest(job.pk)
    for _ in range(max_steps):
        job = Job.objects.get(pk=job.pk)
        if job.status != JobStatus.PROCESSING:
            break
        step = runner.work_once(job.pk)
        if step.action == "wait":
            # Backed-off rows: make them claimable now instead of sleeping in a test.
            Chunk.objects.filter(job_id=job.pk).update(available_at=None)
        elif step.action == "stop":
            # Nothing else is alive in a test to hold a lease.
            Chunk.objects.filter(job_id=job.pk).update(lease_until=None)
    return Job.objects.get(pk=job.pk)


@pytest.fixture
def run_job():
    return drive


@pytest.fixture
def new_job():
    return make_job


def set_published(job, **fields):
    """The job's row as the engine would leave it, published as the engine publishes it (the
    live status), the job page's memo of its render cleared. Returns the job read again."""
    from django.utils import timezone

    from jobs import livestatus, progress_fragment
    from jobs.models import Job

    Job.objects.filter(pk=job.pk).update(updated_at=timezone.now(), **fields)
    job = Job.objects.get(pk=job.pk)
    livestatus.publish(job, livestatus.NO_NEW_EVENT)
    progress_fragment.clear()
    return job


def rows_text(n: int, header: str = "name,text") -> str:
    buf = io.StringIO()
    buf.write(header + "\n")
    for i in range(n):
        buf.write(f"person{i},I love item {i}\n")
    return buf.getvalue()


@pytest.fixture
def fake_dns(monkeypatch):
    """Map host names to addresses for socket.getaddrinfo; other names resolve for real.

    `fake_dns["name"] = ["127.0.0.1"]`, or a callable returning the list (for rebinding tests).
    """
    table: dict[str, object] = {}
    real = socket.getaddrinfo

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        if isinstance(host, bytes):
            host = host.decode()
        if host in table:
            entry = table[host]
            addresses = entry() if callable(entry) else entry
            out = []
            for address in addresses:
                if ":" in address:
                    out.append(
                        (
                            socket.AF_INET6,
                            socket.SOCK_STREAM,
                            6,
                            "",
                            (address, int(port or 0), 0, 0),
                        )
                    )
                else:
                    out.append(
                        (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port or 0)))
                    )
            return out
        return real(host, port, family, type, proto, flags)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return table


@pytest.fixture(autouse=True)
def _no_poll_memo():
    """No poll answer reused from another test (jobs/status_memo.py, jobs/progress_fragment.py)."""
    from jobs import progress_fragment, status_memo

    status_memo.clear()
    progress_fragment.clear()
    yield


@pytest.fixture
def pinned_second(monkeypatch):
    """The poll memos' clock (jobs/second_memo.py) held on one second, as polls under load share
    one; a test moves it on with `pinned_second[0] += 1`."""
    from jobs import second_memo

    now = [1_999_999_000]
    monkeypatch.setattr(second_memo, "current_second", lambda: now[0])
    return now


@pytest.fixture
def live_status_cache():
    """An empty cache, and no refused live-status write remembered, before and after a test."""
    from django.core.cache import cache

    from jobs import livestatus

    cache.clear()
    livestatus._unsent.clear()
    yield
    cache.clear()
    livestatus._unsent.clear()


@pytest.fixture
def published(alice, django_capture_on_commit_callbacks, live_status_cache):
    """A processing job of alice's, its live status published as the engine publishes it."""
    from jobs.ingest import loading
    from jobs.models import JobStatus

    job = make_job(alice, rows_text(30))
    with django_capture_on_commit_callbacks(execute=True):
        loading.ingest(job.pk)
    job.refresh_from_db()
    assert job.status == JobStatus.PROCESSING
    return job


@pytest.fixture
def redis_default(settings):
    """The default cache on Redis, as deployments run it (the unit runs otherwise use a
    per-process cache): one database per test process, flushed before and after."""
    url = os.environ.get("REDIS_URL", "")
    if not url.startswith(("redis://", "rediss://")):
        pytest.skip("needs Redis (REDIS_URL); `make test` starts one")
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
    location = urlsplit(url)._replace(path=f"/{8 + worker % 8}").geturl()
    settings.CACHES = {
        **settings.CACHES,
        "default": {"BACKEND": "batchhub.cache.RedisCache", "LOCATION": location},
    }
    from django.core.cache import cache

    from jobs import livestatus, progress_fragment, status_memo

    assert livestatus._redis() is not None
    cache.clear()
    progress_fragment.clear()
    status_memo.clear()
    yield
    cache.clear()
    progress_fragment.clear()
    status_memo.clear()


@pytest.fixture
def redis_commands(monkeypatch):
    """Start recording the commands sent to the Redis cache (after the `redis_default` fixture):
    call it, and the list it returns fills with each command's name, one a round trip."""

    def start() -> list[str]:
        from jobs import livestatus

        client = livestatus._redis()._cache.get_client(write=False)
        sent: list[str] = []
        real = client.execute_command

        def counting(*args, **kwargs):
            sent.append(str(args[0]))
            return real(*args, **kwargs)

        monkeypatch.setattr(client, "execute_command", counting)
        return sent

    return start


@pytest.fixture(autouse=True)
def _no_worker_holds_steps(monkeypatch):
    """No worker runs beside a test driven in process (the broker in memory): none holds a step,
    and the reaper need not wait for the workers' answers (jobs/held.py) each round."""
    from django.conf import settings

    if settings.CELERY_BROKER_URL.startswith("memory://"):
        from jobs import held

        monkeypatch.setattr(held, "held", lambda: set())
