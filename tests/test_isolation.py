"""The suite leaves the data dir of the checkout it runs in alone (`make run` keeps its
database, broker and uploads there)."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.storage import default_storage

from tests.conftest import make_job, rows_text

pytestmark = pytest.mark.django_db


def test_a_job_made_in_a_test_keeps_its_upload_outside_the_data_dir(alice):
    job = make_job(alice, rows_text(3))
    stored = Path(default_storage.path(job.input_file.name))
    assert stored.is_file()
    assert not stored.is_relative_to(settings.DATA_DIR)
