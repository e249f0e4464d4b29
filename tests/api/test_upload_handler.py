"""jobs.upload.UploadLimit on its own: refuses early on Content-Length, counts bytes otherwise."""

from __future__ import annotations

import pytest
from django.core.files.uploadhandler import StopUpload

from batchhub.api import FileTooLarge
from jobs.upload import FORM_ALLOWANCE, UploadLimit


def test_a_declared_length_far_over_the_limit_is_refused_before_any_byte_is_read():
    class Unreadable:
        def read(self, *args):
            raise AssertionError("the body must not be read")

    handler = UploadLimit(limit=1000)
    with pytest.raises(FileTooLarge) as info:
        handler.handle_raw_input(Unreadable(), {}, 1000 + FORM_ALLOWANCE + 1, b"b", "utf-8")
    assert info.value.status_code == 413
    assert info.value.details == {"max_bytes": 1000}


def test_a_declared_length_within_the_allowance_is_parsed_normally():
    handler = UploadLimit(limit=1000)
    assert handler.handle_raw_input(None, {}, 1000 + FORM_ALLOWANCE, b"b", "utf-8") is None
    handler.raise_if_exceeded()  # nothing recorded


def test_chunks_pass_through_until_the_limit_then_the_upload_stops():
    handler = UploadLimit(limit=10)
    assert handler.receive_data_chunk(b"12345", 0) == b"12345"
    assert handler.receive_data_chunk(b"67890", 5) == b"67890"  # exactly at the limit
    with pytest.raises(StopUpload) as info:
        handler.receive_data_chunk(b"x", 10)
    # Django drains the rest of the body, so the client gets the response, not a reset.
    assert info.value.connection_reset is False
    with pytest.raises(FileTooLarge):
        handler.raise_if_exceeded()


def test_the_limit_comes_from_settings(settings):
    settings.BATCHHUB_MAX_UPLOAD_BYTES = 4321
    assert UploadLimit().limit == 4321
