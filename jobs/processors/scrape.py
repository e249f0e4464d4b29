"""Fetch the web page in a column and extract what people usually want from it."""

from __future__ import annotations

import codecs
import re
from typing import Any

from selectolax.lexbor import LexborHTMLParser, SelectolaxError

from . import _httpclient as net
from .base import ParamsError, Processor, RowError, RowInput

SERVICE = "The page"
_HTML_TYPES = ("text/html", "application/xhtml+xml")
_META_CHARSET = re.compile(
    rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.IGNORECASE
)
_COLUMN_NAME = r"^[^\s{}][^{}]{0,99}$"
BASE_OUTPUTS = ["final_url", "status", "title", "description", "language", "text"]


def _check_selector(selector: str) -> None:
    try:
        LexborHTMLParser("<html></html>").css_first(selector)
    except (SelectolaxError, ValueError) as exc:
        raise ParamsError(
            f"params.selectors: {selector!r} is not a CSS selector ({exc})."
        ) from None


class ScrapeProcessor(Processor):
    name = "scrape"
    title = "Scrape a web page"
    description = (
        "Fetches the URL in the url column (following up to max_redirects redirects, within a "
        "time and size limit) and extracts the final URL, HTTP status, title, meta description, "
        "the page's declared language and its main text (trafilatura, falling back to the body "
        "text), plus the first match of any CSS selectors you give."
    )
    inputs = ["url"]
    outputs = list(BASE_OUTPUTS)
    io_bound = True
    params_schema = {
        "type": "object",
        "properties": {
            "timeout": {
                "type": "number",
                "title": "Timeout (seconds)",
                "minimum": 0.1,
                "maximum": 300,
                "default": 15,
                "description": "For each request (connect, and between bytes read); "
                "retried on timeout.",
            },
            "max_bytes": {
                "type": "integer",
                "title": "Largest page (bytes)",
                "minimum": 1024,
                "maximum": 50_000_000,
                "default": 2_000_000,
                "description": "Reading stops past this size and the row fails.",
            },
            "max_redirects": {
                "type": "integer",
                "title": "Redirects followed",
                "minimum": 0,
                "maximum": 10,
                "default": 5,
                "description": "More redirects than this fail the row.",
            },
            "user_agent": {
                "type": "string",
                "title": "User-Agent",
                "minLength": 1,
                "maxLength": 300,
                "default": net.DEFAULT_USER_AGENT,
                "description": "Sent with every request; "
                "say who you are so site owners can reach you.",
            },
            "selectors": {
                "type": "object",
                "title": "CSS selectors",
                "default": {},
                "maxProperties": 50,
                "propertyNames": {"pattern": _COLUMN_NAME},
                "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 500},
                "description": "Output column → CSS selector; the first match's text is stored, "
                'e.g. {"price": "span.price"}.',
            },
            "include_text": {
                "type": "boolean",
                "title": "Extract the main text",
                "default": True,
                "description": "Turn off to skip the (slower) main-text extraction.",
            },
            "max_text_chars": {
                "type": "integer",
                "title": "Text characters kept",
                "minimum": 0,
                "maximum": 1_000_000,
                "default": 20_000,
                "description": "The text column is cut to this many characters.",
            },
            "client_errors": {
                "type": "string",
                "title": "4xx answers",
                "enum": ["fail", "keep"],
                "default": "fail",
                "description": "fail: a 4xx answer (404, 410, …) fails the row. keep: the row "
                "succeeds with the status and whatever the error page contains.",
            },
        },
        "additionalProperties": False,
    }

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        for column, selector in params["selectors"].items():
            if column in BASE_OUTPUTS:
                raise ParamsError(f"params.selectors: {column!r} is already an output column.")
            _check_selector(selector)

    def __init__(self, params: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(params, **kwargs)
        p = self.params
        self.client = net.make_client(
            concurrency=self.context.concurrency,
            timeout=p["timeout"],
            follow_redirects=True,
            max_redirects=p["max_redirects"],
            headers={
                "User-Agent": p["user_agent"],
                "Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.5",
            },
        )

    def output_columns(self) -> list[str]:
        return BASE_OUTPUTS + list(self.params["selectors"])

    def process_row(self, row: RowInput) -> dict[str, Any]:
        url = row.inputs.get("url")
        url = url.strip() if isinstance(url, str) else ""
        if not url:
            raise RowError("The url is empty.")
        if not re.match(r"(?i)^https?://[^/?#\s]", url):
            raise RowError(
                f"Only http and https URLs can be fetched: {url[:200]}",
                reason="Only http and https URLs can be fetched",
            )
        limit = self.params["max_bytes"]
        with net.transport_errors(SERVICE), self.client.stream("GET", url) as response:
            status = response.status_code
            if not (
                400 <= status < 500 and status != 429 and self.params["client_errors"] == "keep"
            ):
                net.check_response(response, service=SERVICE)
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > limit:
                raise RowError(
                    f"The page is larger than {limit:,} bytes ({int(declared):,} declared).",
                    reason=f"The page is larger than {limit:,} bytes.",
                )
            content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if content_type and content_type not in _HTML_TYPES and content_type != "text/plain":
                raise RowError(f"Not an HTML page (Content-Type: {content_type}).")
            body = bytearray()
            for piece in response.iter_bytes():
                body += piece
                if len(body) > limit:
                    raise RowError(f"The page is larger than {limit:,} bytes.")
            final_url = str(response.url)
            charset = response.charset_encoding
        output = {"final_url": final_url, "status": status}
        html = _decode(bytes(body), charset)
        if content_type == "text/plain":
            output |= {"title": None, "description": None, "language": None}
            output["text"] = (
                html[: self.params["max_text_chars"]] if self.params["include_text"] else None
            )
            return output | {column: None for column in self.params["selectors"]}
        return output | self._extract(html, final_url)

    def _extract(self, html: str, url: str) -> dict[str, Any]:
        tree = LexborHTMLParser(html)
        title = _text(tree.css_first("title")) or _meta(tree, 'meta[property="og:title"]')
        description = _meta(tree, 'meta[name="description" i]') or _meta(
            tree, 'meta[property="og:description"]'
        )
        root = tree.css_first("html")
        language = (
            (root.attributes.get("lang") or root.attributes.get("xml:lang") or "").strip()
            if root
            else ""
        )
        out: dict[str, Any] = {
            "title": title,
            "description": description,
            "language": language or None,
        }
        for column, selector in self.params["selectors"].items():
            out[column] = _text(tree.css_first(selector))
        text = None
        if self.params["include_text"]:
            text = _main_text(html, url) or _body_text(tree)
            text = text[: self.params["max_text_chars"]] if text else None
        out["text"] = text
        # Keep the column order stable: base outputs first, then the selectors.
        return {
            key: out[key]
            for key in ["title", "description", "language", "text", *self.params["selectors"]]
        }

    def close(self) -> None:
        self.client.close()


def _decode(body: bytes, charset: str | None) -> str:
    """Bytes to text: the header's charset, else a <meta charset>, else a guess, else UTF-8."""
    for candidate in (charset, _meta_charset(body)):
        if candidate:
            try:
                codecs.lookup(candidate)
                return body.decode(candidate, errors="replace")
            except LookupError:
                continue
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        from charset_normalizer import from_bytes

        best = from_bytes(body[:200_000]).best()
        return body.decode(best.encoding if best else "utf-8", errors="replace")


def _meta_charset(body: bytes) -> str | None:
    match = _META_CHARSET.search(body[:4096])
    return match.group(1).decode("ascii", "ignore") if match else None


def _text(node) -> str | None:
    if node is None:
        return None
    text = " ".join(node.text(separator=" ").split())
    return text or None


def _meta(tree: LexborHTMLParser, selector: str) -> str | None:
    node = tree.css_first(selector)
    if node is None:
        return None
    content = " ".join((node.attributes.get("content") or "").split())
    return content or None


def _main_text(html: str, url: str) -> str | None:
    import trafilatura  # heavy import (lxml, justext): only when a scrape actually runs

    try:
        return trafilatura.extract(html, url=url, include_comments=False, include_tables=True)
    except Exception:  # trafilatura can trip over odd markup; the fallback below still gives text
        return None


def _body_text(tree: LexborHTMLParser) -> str | None:
    for node in tree.css("script, style, noscript, template"):
        node.decompose()
    body = tree.body
    if body is None:
        return None
    text = "\n".join(
        line.strip() for line in body.text(separator="\n").splitlines() if line.strip()
    )
    return text or None
