"""The upload size limit, enforced while the upload arrives instead of after it is on disk.

`UploadLimit` is a Django upload handler put first in the request's chain (before the memory and
temporary-file handlers), so it sees every chunk before anyone stores it:

- a request whose declared Content-Length is already far over the limit is refused before a single
  byte of the body is read (`handle_raw_input`);
- otherwise the bytes of each file are counted as they arrive; at the first chunk over the limit the
  handler records it and stops the upload. Django then closes (and so deletes) the partial temporary
  file and reads the rest of the body into nowhere (`connection_reset=False`), so the client, still
  sending, gets a clean response instead of a reset connection.

The API view calls `raise_if_exceeded()` after parsing to turn the stop into the contract's 413;
the dashboard's upload view (`guard_upload`) checks the declared length before anything reads the
body (the CSRF check included) and shows the same message on the page with a 413.
"""

from __future__ import annotations

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, StopUpload

from batchhub.api import FileTooLarge

# Room for the multipart framing and the form fields beside the file (params can hold a long
# prompt template). A body larger than limit + this cannot hold a file within the limit.
FORM_ALLOWANCE = 1024 * 1024


def _megabytes(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB" if n >= 1024 * 1024 else f"{n:,} bytes"


def too_large(limit: int) -> FileTooLarge:
    return FileTooLarge(
        f"The upload is larger than the limit of {_megabytes(limit)}.",
        details={"max_bytes": limit},
    )


def decompressed_too_large(limit: int) -> FileTooLarge:
    """A gzip upload within the size limit that inflates past the limit on its text: the same
    413 as an upload over the size limit, since splitting the input is the cure for both."""
    return FileTooLarge(
        f"The upload decompresses to more than {_megabytes(limit)}, the limit for the text of a "
        "compressed upload; reading stopped there. Split it into smaller files.",
        details={"max_decompressed_bytes": limit},
    )


class UploadLimit(FileUploadHandler):
    def __init__(self, request=None, limit: int | None = None):
        super().__init__(request)
        self.limit = settings.BATCHHUB_MAX_UPLOAD_BYTES if limit is None else limit
        self.exceeded = False

    def declared_too_large(self, content_length: int | None) -> bool:
        """The body's declared length alone rules out a file within the limit."""
        return bool(content_length) and content_length > self.limit + FORM_ALLOWANCE

    def handle_raw_input(self, input_data, META, content_length, boundary, encoding=None):
        if self.declared_too_large(content_length):
            # Nothing read yet: refuse at once rather than receive a body that cannot be kept.
            self.exceeded = True
            raise too_large(self.limit)
        return None  # let the other handlers parse as usual

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        if start + len(raw_data) > self.limit:
            self.exceeded = True
            raise StopUpload(connection_reset=False)
        return raw_data  # pass the chunk on to the handler that stores it

    def file_complete(self, file_size: int):
        return None  # another handler builds the file object

    def raise_if_exceeded(self) -> None:
        if self.exceeded:
            raise too_large(self.limit)


def guard_upload(refuse):
    """Decorate a form view so UploadLimit comes first on its POSTs, before the CSRF check.

    The CSRF check reads the body (its token is a form field), so the wrapper is CSRF-exempt
    only to run first: a body whose declared length is over the limit is refused with
    `refuse(request, limit)` before a byte is read (a refusal changes nothing); anything else
    goes to the view under the usual CSRF protection, with `request.upload_limit` set for it
    to check after parsing (a body that lied about its length stops at the limit).
    """
    from functools import wraps

    from django.views.decorators.csrf import csrf_exempt, csrf_protect

    def decorate(view):
        protected = csrf_protect(view)

        @csrf_exempt
        @wraps(view)
        def wrapper(request, *args, **kwargs):
            request.upload_limit = None
            if request.method == "POST":
                limit = UploadLimit(request)
                request.upload_handlers.insert(0, limit)
                request.upload_limit = limit
                length = str(request.META.get("CONTENT_LENGTH") or "")
                if limit.declared_too_large(int(length) if length.isdigit() else None):
                    limit.exceeded = True
                    return refuse(request, limit)
            return protected(request, *args, **kwargs)

        return wrapper

    return decorate
