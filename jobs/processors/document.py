"""Fetch the document (PDF, HTML or plain text) at a URL and extract its text, page count and
title. `fetch_document` is shared with the llm processor's document column."""

from __future__ import annotations

import io
import re
from typing import Any

from . import _httpclient as net
from .base import Processor, RowError, RowInput

SERVICE = "The document's server"
OUTPUTS = ["title", "page_count", "text", "content_type"]
_PDF_TYPES = ("application/pdf", "application/x-pdf")
_HTML_TYPES = ("text/html", "application/xhtml+xml")
DEFAULTS = {"max_bytes": 20_000_000, "max_pages": 20, "max_text_chars": 100_000}


def fetch_document(
    client, url: str, *, max_bytes: int, max_pages: int, max_text_chars: int
) -> dict[str, Any]:
    """{title, page_count, text, content_type} of the document at `url`, read within `max_bytes`
    through the processors' client (their SSRF policy); problems are row errors or retries."""
    url = url.strip() if isinstance(url, str) else ""
    if not url:
        raise RowError("The document URL is empty.")
    if not re.match(r"(?i)^https?://[^/?#\s]", url):
        raise RowError(
            f"Only http and https URLs can be fetched: {url[:200]}",
            reason="Only http and https URLs can be fetched",
        )
    with net.transport_errors(SERVICE), client.stream("GET", url) as response:
        net.check_response(response, service=SERVICE)
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise RowError(
                f"The document is larger than {max_bytes:,} bytes ({int(declared):,} declared).",
                reason=f"The document is larger than {max_bytes:,} bytes.",
            )
        content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        body = bytearray()
        for piece in response.iter_bytes():
            body += piece
            if len(body) > max_bytes:
                raise RowError(f"The document is larger than {max_bytes:,} bytes.")
        charset = response.charset_encoding
    data = bytes(body)
    if content_type in _PDF_TYPES or data.startswith(b"%PDF-"):
        out = _pdf(data, max_pages)
        content_type = "application/pdf"
    elif content_type in _HTML_TYPES or (not content_type and b"<html" in data[:1024].lower()):
        out = _html(data, charset, url)
    elif content_type.startswith("text/") or not content_type:
        from .scrape import _decode

        out = {"title": None, "page_count": 1, "text": _decode(data, charset)}
    else:
        raise RowError(f"Not a PDF, HTML or text document (Content-Type: {content_type}).")
    text = out["text"] or ""
    out["text"] = text[:max_text_chars]
    out["content_type"] = content_type or "text/plain"
    return out


def _pdf(data: bytes, max_pages: int) -> dict[str, Any]:
    from pypdf import PdfReader  # loaded when a PDF arrives, not with every processor
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise RowError("The PDF is encrypted with a password.")
        count = len(reader.pages)
        pages = []
        for page in reader.pages[:max_pages]:
            pages.append((page.extract_text() or "").strip())
        title = None
        if reader.metadata is not None and reader.metadata.title:
            title = " ".join(str(reader.metadata.title).split()) or None
    except RowError:
        raise
    except (PdfReadError, ValueError, KeyError, TypeError, AssertionError) as exc:
        raise RowError(
            f"The PDF could not be read: {exc}", reason="The PDF could not be read"
        ) from None
    return {"title": title, "page_count": count, "text": "\n\n".join(p for p in pages if p)}


def _html(data: bytes, charset: str | None, url: str) -> dict[str, Any]:
    from selectolax.lexbor import LexborHTMLParser

    from .scrape import _body_text, _decode, _main_text, _text

    html = _decode(data, charset)
    tree = LexborHTMLParser(html)
    text = _main_text(html, url) or _body_text(tree)
    return {"title": _text(tree.css_first("title")), "page_count": 1, "text": text}


def document_params_schema() -> dict[str, Any]:
    return {
        "timeout": {
            "type": "number",
            "title": "Timeout (seconds)",
            "minimum": 0.1,
            "maximum": 300,
            "default": 30,
            "description": "For each request (connect, and between bytes read).",
        },
        "max_bytes": {
            "type": "integer",
            "title": "Largest document (bytes)",
            "minimum": 1024,
            "maximum": 100_000_000,
            "default": DEFAULTS["max_bytes"],
            "description": "Reading stops past this size and the row fails.",
        },
        "max_pages": {
            "type": "integer",
            "title": "Pages read",
            "minimum": 1,
            "maximum": 10_000,
            "default": DEFAULTS["max_pages"],
            "description": "Text is extracted from the first N pages of a PDF.",
        },
        "max_text_chars": {
            "type": "integer",
            "title": "Text characters kept",
            "minimum": 0,
            "maximum": 1_000_000,
            "default": DEFAULTS["max_text_chars"],
            "description": "The text is cut to this many characters.",
        },
    }


class DocumentProcessor(Processor):
    name = "document"
    title = "Read a document (PDF, HTML, text)"
    description = (
        "Fetches the PDF, HTML page or text file at the URL in the url column (within a time and "
        "size limit, under the same address policy as scrape) and extracts its title, page "
        "count and the text of its first pages (pypdf for PDFs)."
    )
    inputs = ["url"]
    outputs = list(OUTPUTS)
    io_bound = True
    params_schema = {
        "type": "object",
        "properties": {
            **document_params_schema(),
            "max_redirects": {
                "type": "integer",
                "title": "Redirects followed",
                "minimum": 0,
                "maximum": 10,
                "default": 5,
                "description": "More redirects than this fail the row.",
            },
        },
        "additionalProperties": False,
    }

    def __init__(self, params: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(params, **kwargs)
        p = self.params
        self.client = net.make_client(
            concurrency=self.context.concurrency,
            timeout=p["timeout"],
            follow_redirects=True,
            max_redirects=p["max_redirects"],
            headers={
                "User-Agent": net.DEFAULT_USER_AGENT,
                "Accept": "application/pdf,text/html;q=0.9,text/plain;q=0.8,*/*;q=0.5",
            },
        )

    def process_row(self, row: RowInput) -> dict[str, Any]:
        p = self.params
        return fetch_document(
            self.client,
            row.inputs.get("url"),
            max_bytes=p["max_bytes"],
            max_pages=p["max_pages"],
            max_text_chars=p["max_text_chars"],
        )

    def close(self) -> None:
        self.client.close()
