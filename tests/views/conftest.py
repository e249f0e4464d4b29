"""Fixtures for the dashboard view tests: uploaded files land in a temporary MEDIA_ROOT."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.BATCHHUB_ALLOW_SIGNUP = False
    # Tests use the plain static storage: no collectstatic manifest needed.
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture
def renders(monkeypatch):
    """The job ids of the job page's fragments rendered (progress_fragment._fragment), in order."""
    from jobs import progress_fragment

    made = []
    real = progress_fragment._fragment

    def spy(job, **kwargs):
        made.append(job.public_id)
        return real(job, **kwargs)

    monkeypatch.setattr(progress_fragment, "_fragment", spy)
    return made
