"""The JSON bodies of `POST /jobs` besides `rows`, turned into the one input a job knows (a file or
a list of row objects), so nothing downstream of this module knows they exist:

- `upload`: the id of a two-step upload (jobs/uploads.py), read like a multipart file;
- `csv_base64`: a whole CSV, base64-encoded, as bulk-GPT style APIs take it;
- `documents` + `column_mapping` (+ `job_id`): the document-tagging style, a list of documents
  and which of their fields feeds which processor input, with a client-chosen job id that makes
  the request repeat-safe like an Idempotency-Key.

PromptLoop's JSONL lines (`{"data_uuid", "inputs": [...]}`) need nothing here: ingest reads them
as they are (data_uuid becomes the id column, inputs the columns input_1, input_2, …).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from django.core.files.base import ContentFile, File

from batchhub.api import APIError
from batchhub.jsonstream import JSONLines, loads_checked

from . import uploads
from .creation import Source

INPUT_FIELDS = ("rows", "upload", "csv_base64", "documents")


def check_one_input(data: dict[str, Any], *, has_file: bool = False) -> dict[str, Any]:
    given = [name for name in INPUT_FIELDS if data.get(name) is not None]
    if has_file:
        given.insert(0, "file")
    if len(given) != 1:
        message = (
            "Send the input: one of rows, upload, csv_base64 or documents."
            if not given
            else f"Send one input, not {' and '.join(given)}."
        )
        raise APIError(message, details={name: [message] for name in given or ["rows"]})
    if data.get("column_mapping") is not None:
        if data.get("column_map"):
            raise APIError(
                "Send column_map or column_mapping, not both.",
                details={"column_mapping": ["column_map is given too"]},
            )
        data["column_map"] = data.pop("column_mapping")
    return data


def source(user, data: dict[str, Any]) -> Source:
    """The job's input from validated JSON (or form) data."""
    if data.get("file") is not None:
        return Source(upload=data["file"])
    if data.get("upload") is not None:
        upload = uploads.for_job(user, data["upload"])
        data["_upload"] = upload
        # Under the client's file name: Source takes the format hint (.jsonl, .gz) from it.
        stored = upload.file.storage.open(upload.file.name, "rb")
        return Source(upload=File(stored, name=upload.filename))
    if data.get("csv_base64") is not None:
        return Source(upload=ContentFile(_decoded(data["csv_base64"]), name="input.csv"))
    if data.get("documents") is not None:
        documents = data["documents"]
        if isinstance(documents, JSONLines):
            return Source(rows=_document_lines(documents))
        return Source(rows=[_document_row(doc, n) for n, doc in enumerate(documents, 1)])
    return Source(rows=data["rows"])


def _decoded(text: str) -> bytes:
    try:
        body = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise APIError(
            "csv_base64 is not valid base64.", details={"csv_base64": ["not valid base64"]}
        ) from None
    if not body:
        raise APIError("csv_base64 is empty.", details={"csv_base64": ["empty"]})
    return body


def _document_lines(documents: JSONLines) -> JSONLines:
    """Documents read from the body a line each, as rows a line each: a document at a time."""
    rows = JSONLines()
    for number, line in enumerate(documents.lines(), 1):
        rows.add(_document_row(loads_checked(line), number))
    rows.stopped = documents.stopped
    return rows


def _document_row(doc: Any, number: int) -> dict[str, Any]:
    if isinstance(doc, str):
        return {"text": doc}  # a bare document is its text
    if isinstance(doc, dict):
        return doc
    raise APIError(
        f"documents[{number - 1}] must be an object or a string.",
        details={"errors": [{"line": number, "column": None, "message": "not an object"}]},
    )


def idempotency_key(data: dict[str, Any], header: str | None) -> str | None:
    """The request's repeat-safety key: the Idempotency-Key header, or the body's job_id."""
    job_id = (data.get("job_id") or "").strip() or None
    if header and job_id and header != job_id:
        raise APIError(
            "job_id and the Idempotency-Key header differ; send one of them.",
            details={"job_id": ["differs from Idempotency-Key"]},
        )
    return header or job_id


def after_create(data: dict[str, Any], source_: Source) -> None:
    """Once the job holds its own copy of the input: a two-step upload is used up."""
    if data.get("_upload") is not None:
        source_.upload.close()
        uploads.consume(data["_upload"])
