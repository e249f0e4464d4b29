"""Two-step upload: the file goes to storage in one PUT of its raw bytes, then a job names it.

`POST /uploads` creates an empty Upload and a signed PUT URL; the PUT streams the request body
into Django storage piece by piece (never whole in memory), under the same size limit as a
multipart upload; `POST /jobs {"upload": id}` validates it exactly as a multipart file is
validated and copies it into the job. An upload makes one job; unused ones expire.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta

from django.conf import settings
from django.core.files.base import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.http import Http404
from django.utils import timezone

from batchhub.api import APIError, InvalidState

from . import links
from .models import STAGED, Upload
from .upload import too_large

logger = logging.getLogger(__name__)

PIECE_BYTES = 64 * 1024
# An upload not used by a job is kept this long after its PUT URL expires, then deleted.
UNUSED_GRACE = timedelta(hours=24)


def create(user, filename: str = "") -> tuple[Upload, str, int]:
    """A new empty upload, the token of its PUT URL and when that expires (unix seconds)."""
    expiry = links.new_upload_expiry()
    upload = Upload.objects.create(
        owner=user,
        filename=_clean_name(filename),
        expires_at=links.expires_at(expiry) + UNUSED_GRACE,
    )
    return upload, links.upload_token(upload.public_id, expiry), expiry


def _clean_name(name: str) -> str:
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    base = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in base)[:100]
    return base or "input.csv"


def get(user, public_id: str) -> Upload:
    upload = Upload.objects.filter(
        owner=user, public_id=public_id, expires_at__gt=timezone.now()
    ).first()
    if upload is None:
        raise Http404("No such upload.")
    return upload


class _Body:
    """The request body as a file that counts what it hands out and stops past the limit."""

    def __init__(self, stream, limit: int):
        self.stream = stream
        self.limit = limit
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size if size and size > 0 else PIECE_BYTES)
        self.size += len(data)
        if self.size > self.limit:
            raise too_large(self.limit)
        return data


def receive(upload_id: str, token: str, stream, content_length: int) -> Upload:
    """Store the body of the PUT at a signed upload URL; replaces what an earlier PUT stored."""
    links.open_upload_token(upload_id, token)
    upload = Upload.objects.filter(public_id=upload_id, expires_at__gt=timezone.now()).first()
    if upload is None:
        raise Http404("No such upload.")
    if upload.received_at is not None and not upload.file:
        raise InvalidState("This upload has already been used to create a job.")
    limit = settings.BATCHHUB_MAX_UPLOAD_BYTES
    if content_length > limit:
        raise too_large(limit)  # refused before reading a byte
    old_name = upload.file.name if upload.file else ""
    body = _Body(stream, limit)
    file = File(body, name=upload.filename)
    try:
        # FieldFile.save reads the body through File.chunks(): 64 KB at a time into storage.
        upload.file.save(upload.filename, file, save=False)
    except APIError:
        _delete_partial(upload)
        raise
    if body.size < content_length:
        # The sender stopped before the end it declared (a dropped connection reads as the end
        # of the body): a cut file is not kept, and an earlier PUT's file stays.
        upload.file.name = old_name or None
        _delete_partial(upload)
        raise APIError(
            f"The body ended after {body.size:,} of the {content_length:,} bytes its "
            "Content-Length declared: the file was cut short, and none of it was kept. "
            "PUT the whole file again.",
            details={"body": ["shorter than its Content-Length"]},
        )
    if body.size == 0:
        _delete_partial(upload)
        raise APIError("The body is empty; PUT the file's bytes.", details={"body": ["empty"]})
    upload.size = body.size
    upload.received_at = timezone.now()
    upload.save(update_fields=["file", "size", "received_at"])
    if old_name and old_name != upload.file.name:
        upload.file.storage.delete(old_name)
    return upload


def _delete_partial(upload: Upload) -> None:
    # Storage.save has already created the file under a name FieldFile did not get to keep.
    storage = upload.file.storage
    prefix = f"{STAGED}/{upload.public_id}/"
    try:
        _dirs, files = storage.listdir(prefix)
    except (FileNotFoundError, NotImplementedError):
        return
    keep = upload.file.name if upload.received_at else ""
    for name in files:
        if prefix + name != keep:
            storage.delete(prefix + name)


def for_job(user, public_id: str) -> Upload:
    """The user's upload ready to become a job: received and not used yet."""
    upload = get(user, public_id)
    if upload.received_at is None:
        raise InvalidState(
            "Nothing has been uploaded to this upload yet; PUT the file to its upload_url first.",
            details={"upload": ["empty"]},
        )
    if not upload.file:
        raise InvalidState(
            "This upload has already been used to create a job.", details={"upload": ["used"]}
        )
    return upload


def consume(upload: Upload) -> None:
    """The job has its own copy: drop the staged file and its folder; the row remembers the
    upload was used."""
    name = upload.file.name
    Upload.objects.filter(pk=upload.pk).update(file="")

    def drop() -> None:
        upload.file.storage.delete(name)
        _remove_folder(upload.file.storage, upload.public_id)

    transaction.on_commit(drop)


def _remove_folder(storage, public_id: str) -> bool:
    """Remove the upload's staged folder if it is empty (local disk; object stores have none)."""
    try:
        os.rmdir(storage.path(f"{STAGED}/{public_id}"))
    except (NotImplementedError, OSError):
        return False  # not a local disk, not there, or not empty (a file arriving is kept)
    return True


def expire_uploads(now=None) -> int:
    """Delete uploads past their time, with their files; returns how many."""
    count = 0
    for upload in Upload.objects.filter(expires_at__lte=now or timezone.now()).iterator():
        try:
            if upload.file:
                upload.file.storage.delete(upload.file.name)
        except Exception:
            logger.exception("could not delete the file of expired upload %s", upload.public_id)
            continue
        _remove_folder(upload.file.storage, upload.public_id)
        upload.delete()
        count += 1
    return count


def remove_empty_folders() -> int:
    """Remove the empty staged folders no waiting upload will fill: those of used and deleted
    uploads (left by releases that kept them). Returns how many went."""
    try:
        folders, _files = default_storage.listdir(STAGED)
    except (FileNotFoundError, NotImplementedError):
        return 0
    # The uploads still waiting (few: they expire), not an IN list of every folder on disk.
    waiting = set(
        Upload.objects.exclude(received_at__isnull=False, file="").values_list(
            "public_id", flat=True
        )
    )
    return sum(_remove_folder(default_storage, name) for name in folders if name not in waiting)
