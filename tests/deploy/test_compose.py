"""compose.yaml describes the multi-machine topology; it must stay in step with the settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def settings_source() -> str:
    return (ROOT / "batchhub" / "settings.py").read_text()


def test_topology_has_every_role():
    services = compose()["services"]
    roles = {"postgres", "redis", "minio", "migrate", "web", "worker", "beat", "proxy"}
    assert roles <= set(services)
    assert services["beat"]["deploy"]["replicas"] == 1  # exactly one scheduler
    assert services["worker"]["deploy"]["replicas"] >= 2
    assert "celery" in services["worker"]["command"] and "worker" in services["worker"]["command"]
    assert "gunicorn" in services["web"]["command"]


def test_every_variable_compose_sets_is_read_by_the_settings():
    env = compose()["x-batchhub-env"]
    source = settings_source()
    read = set(re.findall(r'env_[a-z_]+\("([A-Z0-9_]+)"', source))
    unused = [name for name in env if name not in read]
    assert not unused, f"compose.yaml sets variables the settings never read: {unused}"


def test_the_production_essentials_are_configured():
    env = compose()["x-batchhub-env"]
    assert env["DATABASE_URL"].startswith("postgres://") and "@postgres:" in env["DATABASE_URL"]
    assert env["CELERY_BROKER_URL"].startswith("redis://redis:")
    assert env["CACHE_URL"].startswith("redis://redis:")
    # Several machines share uploads only through object storage.
    assert env["BATCHHUB_STORAGE"] == "s3" and env["AWS_STORAGE_BUCKET_NAME"]
    for service in ("web", "worker", "beat", "migrate"):
        assert compose()["services"][service]["environment"] == env


def test_the_celery_queue_matches_the_settings_default():
    worker = compose()["services"]["worker"]["command"]
    queue = worker[worker.index("--queues") + 1]
    assert f'env_str("CELERY_QUEUE", "{queue}")' in settings_source()


# --- Health checks and start order -------------------------------------------------------------

APP_SERVICES = ("web", "worker", "beat")


def conditions(service: dict) -> dict[str, str]:
    depends = service.get("depends_on", {})
    assert isinstance(depends, dict), "depends_on without conditions waits for nothing"
    return {name: spec["condition"] for name, spec in depends.items()}


def test_the_servers_the_app_needs_have_health_checks():
    services = compose()["services"]
    postgres = services["postgres"]["healthcheck"]["test"]
    assert "pg_isready" in postgres
    env = services["postgres"]["environment"]
    assert postgres[postgres.index("--username") + 1] == env["POSTGRES_USER"]
    assert postgres[postgres.index("--dbname") + 1] == env["POSTGRES_DB"]
    assert "redis-cli ping" in " ".join(services["redis"]["healthcheck"]["test"])
    web = services["web"]["healthcheck"]["test"]
    # A plain Python image has no curl: the check is Python's own.
    assert web[:3] == ["CMD", "python", "-c"]
    port = services["web"]["command"][services["web"]["command"].index("--bind") + 1]
    assert f"http://127.0.0.1:{port.rsplit(':', 1)[1]}/readyz" in web[3]


def test_every_process_waits_for_what_it_needs():
    services = compose()["services"]
    for name in APP_SERVICES:
        assert conditions(services[name]) == {
            "postgres": "service_healthy",
            "redis": "service_healthy",
            "minio": "service_started",
            "migrate": "service_completed_successfully",
        }, name
    # migrate is the one that makes the tables: it waits for the database only.
    assert conditions(services["migrate"]) == {"postgres": "service_healthy"}
    assert services["migrate"]["restart"] == "no"
    assert conditions(services["proxy"]) == {"web": "service_healthy"}


def test_the_conditions_are_consistent():
    services = compose()["services"]
    for name, service in services.items():
        for other, condition in conditions(service).items():
            assert other in services, f"{name} waits for {other}, which is not a service"
            if condition == "service_healthy":
                assert "healthcheck" in services[other], f"{name} waits for {other}'s health"
            elif condition == "service_completed_successfully":
                # A one-shot: a service restarted when it exits never completes.
                assert services[other].get("restart") == "no", other
            else:
                assert condition == "service_started", (name, other, condition)
    # No circle: each service can be started after the ones it waits for.
    started: set[str] = set()
    while len(started) < len(services):
        ready = {
            n for n, s in services.items() if n not in started and set(conditions(s)) <= started
        }
        assert ready, f"a circle among {set(services) - started}"
        started |= ready


@pytest.mark.parametrize(("status", "healthy"), [(200, True), (503, False)])
def test_the_web_health_check_command_fails_on_a_503(status, healthy):
    import http.server
    import subprocess
    import sys
    import threading

    class Answer(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status if self.path == "/readyz" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        test = compose()["services"]["web"]["healthcheck"]["test"]
        code = test[3].replace("127.0.0.1:8000", f"127.0.0.1:{server.server_address[1]}")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=30)
    finally:
        server.shutdown()
        server.server_close()
    assert (done.returncode == 0) is healthy, done.stderr


def test_the_web_limits_slow_clients_as_the_procfile_does():
    # batchhub/webworker.py: a client that stops mid-request no longer holds a thread.
    command = compose()["services"]["web"]["command"]
    assert command[command.index("--worker-class") + 1] == "batchhub.webworker.ThreadWorker"
    web = next(line for line in (ROOT / "Procfile").read_text().splitlines() if line[:4] == "web:")
    assert "--worker-class batchhub.webworker.ThreadWorker" in web


def dockerfile() -> dict[str, list[str]]:
    """The Dockerfile's instructions by name, continuation lines joined, comments left out."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, rest = line.strip().partition(" ")
            found.setdefault(name.upper(), []).append(rest.strip())
    return found


def test_the_image_compose_builds_has_its_dockerfile():
    # `build: .` with no Dockerfile beside it: `docker compose up` stopped at its first step.
    image = compose()["x-batchhub"]
    assert image["build"] == "."
    steps = dockerfile()
    assert steps["FROM"][0].startswith("python:3.12")
    run = " && ".join(steps["RUN"])
    assert "pip install" in run and "--editable ." in run  # the code runs where its files are
    assert "manage.py collectstatic --noinput" in run  # web nodes serve them, long cached
    assert steps["USER"] and steps["USER"][-1] != "root"
    env = " ".join(steps["ENV"])
    assert f"BATCHHUB_DATA_DIR={compose()['x-batchhub-env']['BATCHHUB_DATA_DIR']}" in env
    # Its default command is compose's web command.
    assert yaml.safe_load(steps["CMD"][0]) == compose()["services"]["web"]["command"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "var"} <= set(ignored)  # no local database or secrets in the image
