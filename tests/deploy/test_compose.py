"""compose.yaml describes the multi-machine topology; it must stay in step with the settings."""

from __future__ import annotations

import re
from pathlib import Path

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
