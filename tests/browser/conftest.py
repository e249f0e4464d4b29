"""Playwright against a live server: Debian's Chromium, a logged-in page, and a job driver.

The job driver moves jobs forward while the browser watches. Today it is a background thread in
this process calling the engine (ingest, then runner.work_once) with a pause between steps so a
person — or a test — can see the progress bar move; `job_driver` is the one place to swap it for
real celery worker processes.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connection

from jobs import runner
from jobs.ingest import loading
from jobs.models import Chunk, Job, JobStatus
from tests.conftest import PASSWORD
from tests.support.worker import Worker, flush_broker
from tests.support.worker import wait_for as _wait_for

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = os.environ.get("BATCHHUB_SCREENSHOTS") == "1"
SCREENSHOT_DIR = Path(__file__).resolve().parents[2] / "docs" / "screenshots"



@pytest.fixture(scope="package", autouse=True)
def _orm_beside_playwright():
    """Playwright's sync API keeps an event loop running in this thread while it is open, and
    Django refuses ORM calls under a running loop: allowed here, for this package's tests only
    (the `browser` fixture closes Playwright when they end, before this is undone)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings):
    """On SQLite, a file database: the live server and the driver thread each need a connection."""
    db = django_settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3") and db.get("TEST", {}).get("NAME") in (None, ":memory:"):
        data_dir = Path(django_settings.DATA_DIR)
        data_dir.mkdir(parents=True, exist_ok=True)
        db.setdefault("TEST", {})["NAME"] = str(data_dir / f"browser-test-{os.getpid()}.sqlite3")


def chromium_path() -> str | None:
    path = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
    return path if Path(path).exists() else shutil.which("chromium")


@pytest.fixture(scope="package")
def browser():
    path = chromium_path()
    if not path:
        pytest.skip("Chromium is not installed (apt-get install chromium, or set CHROMIUM_PATH)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


def csp_violations(page) -> list[str]:
    """Collects what Chromium says when the Content-Security-Policy blocks something."""
    found: list[str] = []
    page.on(
        "console",
        lambda msg: found.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    return found


@pytest.fixture
def page(browser, live_server, media):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(15_000)
    violations = csp_violations(page)
    yield page
    context.close()
    # Every browser test also checks that no page broke the CSP.
    assert violations == [], violations


@pytest.fixture
def login(page, live_server, alice):
    def do(username: str = "alice", password: str = PASSWORD):
        page.goto(f"{live_server.url}/accounts/login/")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{live_server.url}/")
        return page

    return do


def screenshot(page, name: str, *, full_page: bool = True) -> None:
    if SCREENSHOTS:
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT_DIR / name), full_page=full_page)


class ThreadDriver:
    """Works every unfinished job like a worker would, one chunk per step, `delay` seconds apart."""

    def __init__(self, delay: float):
        self.delay = delay
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="job-driver", daemon=True)

    def start(self) -> ThreadDriver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.step()
                self._stop.wait(self.delay)
        except BaseException as exc:  # surfaced by the fixture: a silent driver would hang the test
            self.errors.append(exc)
        finally:
            connection.close()

    def step(self) -> None:
        for job in Job.objects.filter(
            status__in=[JobStatus.QUEUED, JobStatus.VALIDATING, JobStatus.PROCESSING]
        ):
            if job.status != JobStatus.PROCESSING:
                loading.ingest(job.pk)
                continue
            step = runner.work_once(job.pk)
            if step.action == "wait":
                Chunk.objects.filter(job_id=job.pk).update(available_at=None)
            elif step.action == "stop":
                # Only this thread works: a lease still held after a pause is stale.
                Chunk.objects.filter(job_id=job.pk, done=False).update(lease_until=None)


@pytest.fixture
def job_driver(transactional_db, settings, tmp_path):
    """Jobs move on their own while the test runs: a real celery worker on PostgreSQL + Redis
    (as `make test` runs them), else a thread in this process stepping the same engine."""
    if connection.vendor == "postgresql" and settings.CELERY_BROKER_URL.startswith("redis"):
        flush_broker()
        worker = Worker(
            tmp_path,
            BATCHHUB_CHUNK_ROWS="100",
            BATCHHUB_PROCESSORS="tests.support.slow_processors:WatchableTemplateProcessor",
        )
        yield worker
        worker.stop()
        return

    if connection.vendor == "sqlite" and "memory" in str(connection.settings_dict.get("NAME", "")):
        pytest.skip(
            "browser tests need a database the driver thread can share: "
            "PostgreSQL, or run tests/browser alone"
        )
    # Small chunks and a pause between them: 3,000 rows take several seconds, long enough to watch.
    settings.BATCHHUB_CHUNK_ROWS = 100
    driver = ThreadDriver(delay=float(os.environ.get("BATCHHUB_DRIVER_DELAY", "0.3"))).start()
    yield driver
    driver.stop()
    if driver.errors:
        raise driver.errors[0]


def job_status(page) -> str:
    """The job page's status badge, as the user reads it."""
    return page.get_by_test_id("status").inner_text().strip()


def wait_for_status(page, label: str, timeout: float = 60_000) -> None:
    """Until the job page's status badge reads `label` (its live part is polled every second)."""
    page.wait_for_function(
        f"() => document.querySelector('[data-testid=status]').innerText.trim() === {label!r}",
        timeout=timeout,
    )


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.2, message: str = "condition"):
    return _wait_for(predicate, timeout=timeout, interval=interval, message=message)
