"""BATCHHUB_PROCESSORS entries are checked at start-up: one that names no processor stops the web
process, the worker and manage.py with the entry in the message, instead of a job finding the
processor missing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured

from jobs.processors.base import check_configured, get_processor_class, reload_registry

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GOOD = "tests.support.fault_processors:CrashProcessor"


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        ("nosuch.module:Cls", "cannot import nosuch.module: ModuleNotFoundError"),
        ("jobs.processors.template:Nope", "jobs.processors.template has no Nope"),
        ("jobs.processors.template", "is not of the form package.module:Class"),
        (":TemplateProcessor", "is not of the form package.module:Class"),
        ("jobs.processors.base:Processor", "is not a Processor subclass with a name"),
        ("jobs.processors.base:logger", "is not a Processor subclass with a name"),
    ],
)
def test_an_entry_that_names_no_processor_is_refused_by_name(settings, entry, says):
    settings.BATCHHUB_PROCESSORS = [GOOD, entry]

    with pytest.raises(ImproperlyConfigured) as caught:
        check_configured()

    assert str(caught.value).startswith(f"BATCHHUB_PROCESSORS entry {entry!r}")
    assert says in str(caught.value)


def test_the_jobs_app_checks_them_when_django_starts(settings):
    settings.BATCHHUB_PROCESSORS = ["nosuch.module:Cls"]

    with pytest.raises(ImproperlyConfigured, match="BATCHHUB_PROCESSORS entry 'nosuch.module:Cls'"):
        apps.get_app_config("jobs").ready()


def test_good_entries_pass_and_are_registered(settings):
    settings.BATCHHUB_PROCESSORS = [GOOD]
    reload_registry()
    try:
        check_configured()
        apps.get_app_config("jobs").ready()
        assert get_processor_class("crash_test") is not None
    finally:
        settings.BATCHHUB_PROCESSORS = []
        reload_registry()


def procfile_line(name: str) -> str:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return next(line for line in lines if line.startswith(f"{name}:")).split(":", 1)[1]


def start_up_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The real settings (not the suite's), on the embedded default under tmp_path."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CACHE_"))}
    for name in ("CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE"):
        base.pop(name, None)
    return {
        **base,
        "PATH": f"{BIN}{os.pathsep}{base.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "BATCHHUB_DATA_DIR": str(tmp_path),
        **extra,
    }


@pytest.mark.parametrize("command", ["manage.py", "web", "worker"])
def test_web_worker_and_manage_py_stop_with_the_entry_in_the_message(tmp_path, command):
    from tests.batchhub.test_procfile_web import free_port

    env = start_up_env(
        tmp_path,
        BATCHHUB_PROCESSORS="nosuch.module:Cls",
        BATCHHUB_BIND=f"127.0.0.1:{free_port()}",
        WEB_CONCURRENCY="1",
        WORKER_CONCURRENCY="1",
    )
    if command == "manage.py":
        args = [sys.executable, "manage.py", "check"]
    else:  # as `make run` starts it
        args = ["bash", "-c", procfile_line(command)]

    # Its own process group, so that a server that did start (the bug) is stopped whole.
    process = subprocess.Popen(
        args,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"{command} started with a bad BATCHHUB_PROCESSORS entry:\n{output}")

    assert process.returncode != 0, output
    assert "BATCHHUB_PROCESSORS entry 'nosuch.module:Cls': cannot import nosuch.module" in output
