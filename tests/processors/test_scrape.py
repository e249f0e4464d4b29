from __future__ import annotations

import pytest

from jobs.processors.base import ParamsError, ProcessorContext
from jobs.processors.scrape import ScrapeProcessor

from .conftest import make_row


def scrape(**params):
    return ScrapeProcessor({"timeout": 0.5, **params}, context=ProcessorContext(concurrency=2))


def fetch(proc, url):
    return proc.run_one(make_row({"link": url}, inputs={"url": url}))


def test_extracts_title_description_language_text_and_selectors(site_server):
    proc = scrape(selectors={"price": "span.amount", "heading": "article h1", "absent": ".nope"})
    assert proc.output_columns() == [
        "final_url",
        "status",
        "title",
        "description",
        "language",
        "text",
        "price",
        "heading",
        "absent",
    ]
    result = fetch(proc, site_server.url + "/page")
    assert result.error is None, result.error
    out = result.output
    assert out["final_url"] == site_server.url + "/page"
    assert out["status"] == 200
    assert out["title"] == "Le Café du Coin"
    assert out["description"] == "Un petit café au coin de la rue."
    assert out["language"] == "fr"
    assert "torréfié sur place depuis 1987" in out["text"]
    assert "tracking" not in out["text"]
    assert (
        out["price"] == "2,10 €"
        and out["heading"] == "Bienvenue au Café du Coin"
        and out["absent"] is None
    )
    assert (
        site_server.requests[0]["headers"]["user-agent"]
        == "BatchHub/0.1 (+self-hosted batch processing)"
    )


def test_og_description_and_body_text_fallback(site_server):
    out = fetch(scrape(), site_server.url + "/bare").output
    assert out["description"] == "Only OG here"
    assert out["title"] is None and out["language"] is None
    assert "short body text" in out["text"]


def test_meta_charset_decoding(site_server):
    out = fetch(scrape(), site_server.url + "/latin1").output
    assert out["title"] == "Größe" and out["language"] == "de"


def test_redirect_chain_is_followed_to_the_final_url(site_server):
    out = fetch(scrape(), site_server.url + "/hop/5").output
    assert out["final_url"] == site_server.url + "/page"
    assert out["title"] == "Le Café du Coin"
    assert len(site_server.requests) == 6


def test_too_many_redirects_is_a_row_error(site_server):
    result = fetch(scrape(max_redirects=5), site_server.url + "/hop/6")
    assert result.error == "The page: too many redirects" and not result.retry


def test_redirect_to_another_scheme_is_refused(site_server):
    result = fetch(scrape(), site_server.url + "/ftp-redirect")
    assert "cannot be requested" in result.error and not result.retry


def test_oversized_page_stops_reading(site_server):
    result = fetch(scrape(max_bytes=50_000), site_server.url + "/big")
    assert result.error == "The page is larger than 50,000 bytes." and not result.retry


def test_oversized_declared_length_fails_before_reading(site_server):
    result = fetch(scrape(max_bytes=10_000), site_server.url + "/big-declared")
    assert result.error.startswith("The page is larger than 10,000 bytes")


def test_non_html_is_a_row_error_and_plain_text_is_kept(site_server):
    assert (
        fetch(scrape(), site_server.url + "/image.png").error
        == "Not an HTML page (Content-Type: image/png)."
    )
    out = fetch(scrape(), site_server.url + "/notes.txt").output
    assert out["text"] == "Just some plain text." and out["title"] is None


def test_404_fails_unless_kept(site_server):
    assert fetch(scrape(), site_server.url + "/missing").error.startswith(
        "The page answered 404 Not Found"
    )
    out = fetch(scrape(client_errors="keep"), site_server.url + "/missing").output
    assert out["status"] == 404 and out["title"] == "Not found"


def test_503_retries_and_timeout_retries(site_server):
    busy = fetch(scrape(), site_server.url + "/busy")
    assert busy.retry and busy.retry_after == 2 and not busy.rate_limited
    slow = fetch(scrape(timeout=0.2), site_server.url + "/slow")
    assert slow.retry and "timed out" in slow.error


@pytest.mark.parametrize("url", ["", "ftp://example.com/", "javascript:alert(1)", "example.com"])
def test_only_http_urls(url):
    result = fetch(scrape(), url)
    assert result.error and not result.retry


def test_bad_selector_is_a_params_error():
    with pytest.raises(ParamsError) as info:
        ScrapeProcessor.validate_params({"selectors": {"x": "p[["}})
    assert "is not a CSS selector" in str(info.value)
    with pytest.raises(ParamsError):
        ScrapeProcessor.validate_params({"selectors": {"title": "h1"}})
