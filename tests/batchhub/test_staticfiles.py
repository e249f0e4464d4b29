"""A release whose `collectstatic` was skipped: pages render, and the web says what to do."""

from __future__ import annotations

import os
import re
import signal
import time

import httpx
import pytest

from tests.batchhub.test_procfile_web import ROOT, free_port, serving, start_web


@pytest.fixture
def web_without_collectstatic(tmp_path):
    """The Procfile's web process, on the production static storage, with an empty STATIC_ROOT."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "CACHE_"))}
    env.pop("CELERY_BROKER_URL", None)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "batchhub.settings",
            "BATCHHUB_TESTING": "0",
            "BATCHHUB_DATA_DIR": str(tmp_path / "data"),
            "STATIC_ROOT": str(tmp_path / "static"),
            "SECRET_KEY": "a-test-key-long-enough-to-sign-anything-it-is-asked-to",
            "PYTHONPATH": str(ROOT),
            "HOME": str(tmp_path),
        }
    )
    (tmp_path / "static").mkdir()
    log = tmp_path / "web.log"
    proc = start_web(port, env, log)
    try:
        deadline = time.monotonic() + 60
        while not serving(port):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", log
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_a_page_renders_and_the_log_says_to_run_collectstatic(web_without_collectstatic):
    base, log = web_without_collectstatic
    with httpx.Client(base_url=base, timeout=30) as client:
        page = client.get("/accounts/login/")
        assert page.status_code == 200, log.read_text()[-3000:]
        assert "Log in to BatchHub" in page.text
        # The page's own stylesheet and scripts are there too, under their plain names.
        assets = re.findall(r'(?:href|src)="(/static/[^"]+)"', page.text)
        assert "/static/css/batchhub.css" in assets
        for asset in assets:
            assert client.get(asset).status_code == 200, asset
    said = log.read_text()
    assert "Static files are not collected" in said
    assert "run `python manage.py collectstatic --noinput`" in said
    assert "Traceback" not in said


def test_a_manifest_without_a_newer_release_s_file_is_reported(settings, tmp_path):
    # The upgrade case: last release's manifest, this release's new file.
    from batchhub.staticfiles import not_collected

    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "batchhub.staticfiles.ForgivingManifestStorage"},
    }
    settings.STATIC_ROOT = tmp_path
    (tmp_path / "staticfiles.json").write_text(
        '{"version": "1.1", "paths": {"css/batchhub.css": "css/batchhub.0123456789ab.css"}}'
    )
    problem = not_collected()
    assert problem.startswith("STATIC_ROOT's manifest lacks ")
    assert problem.endswith(" more")
    assert "css/batchhub.css," not in problem


def test_a_file_changed_since_it_was_collected_is_reported_and_named_plainly(settings, tmp_path):
    # The upgrade case again: last release's collected files, this release's changed stylesheet.
    # Named by its old hash, pages would load last release's CSS for as long as it is cached.
    import json
    import shutil

    from batchhub.staticfiles import ForgivingManifestStorage, _sources, not_collected

    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "batchhub.staticfiles.ForgivingManifestStorage"},
    }
    settings.STATIC_ROOT = tmp_path
    paths = {}
    for name, source in _sources().items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, tmp_path / name)
        paths[name] = name.replace(".", ".0123456789ab.", 1) if "." in name else name
    (tmp_path / "css/batchhub.css").write_text("body { color: red; }\n")  # last release's
    (tmp_path / "staticfiles.json").write_text(json.dumps({"version": "1.1", "paths": paths}))

    assert not_collected() == "STATIC_ROOT holds older copies of css/batchhub.css"
    storage = ForgivingManifestStorage(location=tmp_path)
    assert storage.url("css/batchhub.css") == "/static/css/batchhub.css"
    unchanged = next(name for name in paths if name != "css/batchhub.css")
    assert storage.url(unchanged) == f"/static/{paths[unchanged]}"
