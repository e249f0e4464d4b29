"""A process on the embedded default's own settings and database file (not the suite's in-memory
one): `python tests/support/space_child.py DATA_DIR ROWS` migrates a new file, runs a job of
ROWS rows in this process, deletes it, runs the beat's step that gives space back, and prints
one JSON line with the file's size and free space after each of those."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main(data: Path, rows: int) -> dict:
    os.environ.update(
        {
            "BATCHHUB_DATA_DIR": str(data),
            "DJANGO_SETTINGS_MODULE": "batchhub.settings",
            "BATCHHUB_TESTING": "0",
            "DATABASE_URL": f"sqlite:///{data / 'batchhub.sqlite3'}",
            "MEDIA_ROOT": str(data / "media"),
        }
    )
    for name in ("CELERY_BROKER_URL", "CACHE_URL"):
        os.environ.pop(name, None)  # the embedded default's, under the data dir
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    import jobs.tasks  # noqa: F401  (registers the beat's tasks)
    from batchhub import dbspace
    from batchhub.celery import app
    from jobs import chunks, creation, enqueue, services
    from tests.conftest import csv_upload, drive

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("space", "space@example.com", "a-long-password")
    enqueue.start_ingest = lambda job_pk: None  # this process runs the job itself
    chunks.start_loops = lambda job: None
    text = "".join(f"row{i},{'words of a review ' * 20}{i}\n" for i in range(rows))
    job, _ = creation.create_job(
        user,
        processor="template",
        params={"template": "{name}: {text}"},
        source=creation.Source(upload=csv_upload(f"name,text\n{text}")),
        actor="space",
    )
    job = drive(job)
    assert job.succeeded == rows, job.counts
    figures = {"ran": dataclasses.asdict(dbspace.space())}
    services.delete(job, actor="space")
    figures["deleted"] = dataclasses.asdict(dbspace.space())
    step = settings.CELERY_BEAT_SCHEDULE["give-back-space"]["task"]
    app.tasks[step].apply().get()
    figures["stepped"] = dataclasses.asdict(dbspace.space())
    figures["keep_bytes"] = dbspace.KEEP_BYTES
    return figures


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), int(sys.argv[2]))))
