"""Uploads waiting to become jobs: the new-job page keeps the file so nobody uploads it twice.

A draft lives in Django storage at ``drafts/<user id>/<token>/<file name>`` beside a
``report.json`` holding the preview (so re-rendering the form does not re-read a big file). The
page carries only the token; the path is rebuilt from the logged-in user's id, so one user's token
finds nothing for another. Drafts older than a day are deleted the next time anyone uploads.

A draft is born in ``from_upload`` (the file read once, or refused with no draft left behind)
and ends in ``start_job``, which creates the job from its file and deletes it.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.files.base import ContentFile, File
from django.core.files.storage import default_storage
from django.utils import timezone

from batchhub.api import APIError

from . import creation
from .models import Job

ROOT = "drafts"
MAX_AGE = timedelta(days=1)
REPORT = "report.json"
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{20,64}$")


@dataclass
class Draft:
    token: str
    filename: str
    size: int
    # ingest.Report as plain data: valid, row_count, columns, errors, preview, info
    report: dict[str, Any]

    @property
    def columns(self) -> list[str]:
        return list(self.report.get("columns") or [])


def _dir(user_id: int, token: str) -> str:
    return f"{ROOT}/{int(user_id)}/{token}"


def _safe_name(name: str) -> str:
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    cleaned = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in base)[:100].lstrip(".")
    return cleaned or "input.csv"


def report_data(report: Any) -> dict[str, Any]:
    return {
        "valid": report.valid,
        "row_count": report.row_count,
        "columns": list(report.columns),
        "errors": list(report.errors),
        "preview": list(report.preview),
        "info": asdict(report.info),
    }


def create(user, upload: File) -> tuple[str, str]:
    """Store an upload as a new draft; return (token, stored file name)."""
    cleanup()
    token = secrets.token_urlsafe(24)
    name = _safe_name(getattr(upload, "name", ""))
    upload.seek(0)
    stored = default_storage.save(f"{_dir(user.pk, token)}/{name}", upload)
    return token, stored.rsplit("/", 1)[-1]


def from_upload(user, upload: File) -> Draft:
    """Store an upload as a new draft and read it once: the page shows the saved report after.

    APIError, with no draft left behind, for a file that cannot be read or has no row to process.
    """
    token, stored = create(user, upload)
    draft = Draft(token, stored, upload.size, {})
    fh = open_file(user, draft)
    try:
        report = creation.Source(upload=fh).report(max_rows=settings.BATCHHUB_MAX_ROWS)
    except APIError:
        delete(user, token)
        raise
    finally:
        fh.close()
    if report.row_count == 0:
        # Nothing a job could run: said once, at the upload, not on a preview with a Start button.
        delete(user, token)
        # Not "nothing to process": the first error may be a file unreadable from its line 2.
        first = report.errors[0] if report.errors else {}
        where = f"Line {first['line']}: " if first.get("line") else ""
        message = f"{where}{first['message']}" if first else "The file has a header but no rows."
        raise APIError(f"No job can be made from this file. {message}")
    save_report(user, token, report)
    draft.report = report_data(report)
    return draft


def start_job(user, draft: Draft, **arguments: Any) -> Job:
    """Create the job from the draft's file (creation.create_job checks everything), then delete
    the draft: the job keeps its own copy."""
    fh = open_file(user, draft)
    try:
        job, _created = creation.create_job(user, source=creation.Source(upload=fh), **arguments)
    finally:
        fh.close()
    delete(user, draft.token)
    return job


def save_report(user, token: str, report: Any) -> None:
    body = json.dumps(report_data(report), ensure_ascii=False, default=str).encode()
    path = f"{_dir(user.pk, token)}/{REPORT}"
    if default_storage.exists(path):
        default_storage.delete(path)
    default_storage.save(path, ContentFile(body))


def _files(user, token: str) -> list[str]:
    if not _TOKEN.match(token or ""):
        return []
    try:
        _dirs, files = default_storage.listdir(_dir(user.pk, token))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return files


def load(user, token: str) -> Draft | None:
    """The user's draft with this token, or None (unknown, expired or someone else's)."""
    files = _files(user, token)
    data_files = [f for f in files if f != REPORT]
    if not data_files or REPORT not in files:
        return None
    base = _dir(user.pk, token)
    with default_storage.open(f"{base}/{REPORT}", "rb") as fh:
        report = json.loads(fh.read().decode())
    name = data_files[0]
    return Draft(
        token=token, filename=name, size=default_storage.size(f"{base}/{name}"), report=report
    )


def open_file(user, draft: Draft) -> File:
    """The draft's bytes as a File named like the upload (services read it more than once)."""
    fh = default_storage.open(f"{_dir(user.pk, draft.token)}/{draft.filename}", "rb")
    return File(fh, name=draft.filename)


def delete(user, token: str) -> None:
    for name in _files(user, token):
        default_storage.delete(f"{_dir(user.pk, token)}/{name}")
    try:
        default_storage.delete(_dir(user.pk, token))  # the emptied folder, on local disk
    except OSError:
        pass


def cleanup(now=None) -> int:
    """Delete drafts older than MAX_AGE, for every user; returns how many went."""
    cutoff = (now or timezone.now()) - MAX_AGE
    removed = 0
    try:
        user_dirs, _ = default_storage.listdir(ROOT)
    except (FileNotFoundError, NotADirectoryError):
        return 0
    for user_dir in user_dirs:
        try:
            tokens, _ = default_storage.listdir(f"{ROOT}/{user_dir}")
        except (FileNotFoundError, NotADirectoryError):
            continue
        for token in tokens:
            base = f"{ROOT}/{user_dir}/{token}"
            try:
                _, files = default_storage.listdir(base)
                stamps = [default_storage.get_modified_time(f"{base}/{f}") for f in files]
            except (FileNotFoundError, NotADirectoryError, NotImplementedError):
                continue
            if stamps and max(stamps) >= cutoff:
                continue
            for f in files:
                default_storage.delete(f"{base}/{f}")
            try:
                default_storage.delete(base)
            except OSError:
                pass
            removed += 1
    return removed
