"""The document processor and llm's image and document columns, against the local stand-ins."""

from __future__ import annotations

import pytest

from jobs.processors import get_processor_class
from jobs.processors.base import ProcessorContext
from jobs.processors.document import DocumentProcessor
from jobs.processors.llm import LLMProcessor

from .conftest import make_row


def document(**params):
    return DocumentProcessor({"timeout": 2, **params}, context=ProcessorContext(concurrency=2))


def read(proc, url):
    return proc.run_one(make_row({"link": url}, inputs={"url": url}))


def test_is_registered():
    assert get_processor_class("document") is DocumentProcessor
    assert DocumentProcessor({}).output_columns() == ["title", "page_count", "text", "content_type"]


def test_pdf_text_of_the_first_pages_page_count_and_title(site_server):
    result = read(document(max_pages=2), site_server.url + "/report.pdf")

    assert result.error is None, result.error
    out = result.output
    assert out["title"] == "Quarterly Report"
    assert out["page_count"] == 3
    assert out["content_type"] == "application/pdf"
    assert "Quarterly report: revenue grew" in out["text"]
    assert "Page two: costs fell" in out["text"]
    assert "Page three" not in out["text"]  # only the first two pages were read


def test_html_and_text_documents(site_server):
    page = read(document(), site_server.url + "/page").output
    assert page["title"] == "Le Café du Coin" and page["page_count"] == 1
    assert "torréfié sur place" in page["text"]
    text = read(document(), site_server.url + "/notes.txt").output
    assert text["text"] == "Just some plain text." and text["content_type"] == "text/plain"


@pytest.mark.parametrize(
    "path,params,message",
    [
        ("/broken.pdf", {}, "The PDF could not be read"),
        ("/image.png", {}, "Not a PDF, HTML or text document"),
        ("/report.pdf", {"max_bytes": 1024}, "larger than 1,024 bytes"),
        ("/missing", {}, "answered 404"),
    ],
)
def test_documents_that_cannot_be_read_fail_the_row(site_server, path, params, message):
    result = read(document(**params), site_server.url + path)
    assert result.output is None and message in result.error


def test_private_addresses_are_refused_by_default(site_server, settings):
    settings.BATCHHUB_PROCESSOR_ALLOW_PRIVATE = ""
    result = read(document(), site_server.url + "/report.pdf")
    assert result.output is None and "private" in result.error.lower()


def llm(server_url, **params):
    return LLMProcessor(
        {"base_url": server_url + "/v1", "model": "m", "prompt": "Tag: {name}", **params},
        context=ProcessorContext(concurrency=2),
    )


def test_llm_sends_an_image_column_as_an_image_url_part(openai_server):
    proc = llm(openai_server.url, image_column="picture")
    assert "picture" in proc.required_columns({})
    row = {"name": "cat", "picture": "https://images.example.com/cat.png"}

    result = proc.run_one(make_row(row))

    assert result.error is None, result.error
    content = openai_server.requests[0]["json"]["messages"][-1]["content"]
    assert content == [
        {"type": "text", "text": "Tag: cat"},
        {"type": "image_url", "image_url": {"url": "https://images.example.com/cat.png"}},
    ]
    assert result.output["answer"] == "ECHO: Tag: cat\n[image: https://images.example.com/cat.png]"


def test_llm_refuses_an_image_cell_that_is_not_an_image_url(openai_server):
    proc = llm(openai_server.url, image_column="picture")
    result = proc.run_one(make_row({"name": "x", "picture": "file:///etc/passwd"}))
    assert "Not an image URL" in result.error and not openai_server.requests


def test_llm_document_column_sends_the_documents_text(openai_server, site_server, monkeypatch):
    monkeypatch.setenv("TEST_LLM_KEY", "sk-test")
    proc = llm(
        openai_server.url, document_column="doc", document_max_pages=1, api_key_env="TEST_LLM_KEY"
    )
    row = {"name": "r1", "doc": site_server.url + "/report.pdf"}

    result = proc.run_one(make_row(row))

    assert result.error is None, result.error
    parts = openai_server.requests[0]["json"]["messages"][-1]["content"]
    assert parts[0] == {"type": "text", "text": "Tag: r1"}
    assert parts[1]["text"].startswith("Document: Quarterly Report\n")
    assert "revenue grew" in parts[1]["text"] and "costs fell" not in parts[1]["text"]
    # The model's key is for the model: the document's host never sees it.
    assert openai_server.requests[0]["headers"]["authorization"] == "Bearer sk-test"
    assert "authorization" not in site_server.requests[0]["headers"]
