"""Rows cannot make a worker reach the operator's own network (SSRF), and the client still works.

The http, scrape and llm processors fetch URLs that come from a job's rows and params, i.e. from
users. By default they reach public addresses only; BATCHHUB_PROCESSOR_ALLOW_PRIVATE lets the
operator open chosen networks (an internal API, a model served on the same machine).
"""

from __future__ import annotations

import pytest

from jobs.processors.base import ProcessorContext
from jobs.processors.http_api import HTTPProcessor
from jobs.processors.llm import LLMProcessor
from jobs.processors.scrape import ScrapeProcessor

from .conftest import make_row

HINT = "processors reach only public addresses unless the operator allows others"


def http(url: str, **params) -> HTTPProcessor:
    return HTTPProcessor(
        {"url": url, "url_encode": False, "timeout": 2, **params},
        context=ProcessorContext(concurrency=2),
    )


def scrape(**params) -> ScrapeProcessor:
    return ScrapeProcessor({"timeout": 2, **params}, context=ProcessorContext(concurrency=2))


def fetch(proc: ScrapeProcessor, url: str):
    return proc.run_one(make_row({"link": url}, inputs={"url": url}))


def test_loopback_is_refused_by_default_and_nothing_is_sent(echo_server, settings):
    settings.BATCHHUB_PROCESSOR_ALLOW_PRIVATE = ""
    result = http("{link}").run_one(make_row({"link": echo_server.url + "/echo"}))
    assert result.error == (
        "The API: 127.0.0.1 is loopback: " + HINT + " (BATCHHUB_PROCESSOR_ALLOW_PRIVATE)."
    )
    assert not result.retry  # waiting will not make the address public
    assert echo_server.requests == []


def test_a_name_that_resolves_inside_is_refused_at_connect(echo_server, settings, fake_dns):
    # A public-looking name with a private answer: the address is checked, not the name, and
    # the check is made on the address the socket then connects to.
    settings.BATCHHUB_PROCESSOR_ALLOW_PRIVATE = ""
    port = echo_server.port
    fake_dns["api.example.test"] = ["127.0.0.1"]
    result = http("{link}").run_one(make_row({"link": f"http://api.example.test:{port}/echo"}))
    assert result.error.startswith("The API: api.example.test (127.0.0.1) is loopback: ")
    assert echo_server.requests == []


def test_an_allowed_network_is_reached_with_the_name_in_host(echo_server, settings, fake_dns):
    settings.BATCHHUB_PROCESSOR_ALLOW_PRIVATE = "127.0.0.1/32"
    port = echo_server.port
    fake_dns["api.internal.test"] = ["127.0.0.1"]
    result = http("{link}").run_one(make_row({"link": f"http://api.internal.test:{port}/echo"}))
    assert result.error is None, result.error
    assert result.output["status_code"] == 200
    assert echo_server.requests[0]["headers"]["host"] == f"api.internal.test:{port}"


def test_a_redirect_into_the_private_network_is_refused(site_server, settings):
    # The first page is allowed; the redirect points at another loopback address, which is not.
    settings.BATCHHUB_PROCESSOR_ALLOW_PRIVATE = "127.0.0.1/32"
    port = site_server.port
    result = fetch(scrape(), f"{site_server.url}/redirect?to=http://127.0.0.2:{port}/page")
    assert result.error.startswith("The page: 127.0.0.2 is loopback: ")
    assert not result.retry
    assert [r["path"] for r in site_server.requests] == [f"/redirect?to=http://127.0.0.2:{port}/page"]


@pytest.mark.parametrize("allow", ["", "all"])
def test_cloud_metadata_stays_out_even_with_all(settings, allow):
    settings.BATCHHUB_PROCESSOR_ALLOW_PRIVATE = allow
    proc = LLMProcessor({"base_url": "http://169.254.169.254/v1", "model": "m", "prompt": "{x}"})
    result = proc.run_one(make_row({"x": "hi"}))
    assert result.error.startswith("The LLM endpoint: 169.254.169.254 is cloud metadata: ")
    assert not result.retry


def test_all_lets_every_private_address_in(echo_server, settings):
    settings.BATCHHUB_PROCESSOR_ALLOW_PRIVATE = "all"
    result = http("{link}").run_one(make_row({"link": echo_server.url + "/echo"}))
    assert result.error is None, result.error


def test_a_bad_allowlist_stops_start_up(settings):
    from django.core.exceptions import ImproperlyConfigured

    from jobs.ssrf import PROCESSORS, allowlist

    settings.BATCHHUB_PROCESSOR_ALLOW_PRIVATE = "10.0.0.0/8,intranet"
    with pytest.raises(ImproperlyConfigured, match="BATCHHUB_PROCESSOR_ALLOW_PRIVATE: 'intranet'"):
        allowlist(PROCESSORS)


def test_compressed_pages_are_decoded_and_asked_for(site_server):
    result = fetch(scrape(), site_server.url + "/gzip")
    assert result.error is None, result.error
    assert result.output["title"] == "Le Café du Coin"
    assert "gzip" in site_server.requests[0]["headers"]["accept-encoding"]


def test_connections_are_kept_alive_between_rows(echo_server):
    proc = http("{link}")
    for i in range(20):
        assert proc.run_one(make_row({"link": f"{echo_server.url}/echo/{i}"})).error is None
    proc.close()
    ports = {r["client_port"] for r in echo_server.requests}
    assert len(echo_server.requests) == 20
    assert len(ports) == 1  # one connection, reused: no handshake per row


def test_pages_read_to_the_end_keep_their_connection(site_server):
    proc = scrape(include_text=False, max_bytes=50_000)
    for _ in range(5):
        assert fetch(proc, site_server.url + "/page").error is None
    assert fetch(proc, site_server.url + "/big").error  # stopped reading: that connection goes
    assert fetch(proc, site_server.url + "/page").error is None
    proc.close()
    ports = [r["client_port"] for r in site_server.requests]
    assert len(set(ports[:5])) == 1  # one connection for the five pages read whole
    assert ports[6] != ports[5]  # a new one after the page that was cut off


def test_a_nan_in_a_json_body_is_a_row_error(echo_server):
    proc = http(echo_server.url + "/echo", method="POST", body={"n": "{n}"})
    result = proc.run_one(make_row({"n": float("nan")}))
    assert result.error.startswith("The body cannot be sent as JSON") and not result.retry
    assert echo_server.requests == []


# --- TLS: the checked address is connected to, the URL's name is what is verified ---------------


def _certificates(tmp_path, name: str):
    """A throwaway CA and a server certificate for `name` signed by it, as PEM files."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def build(subject, issuer, key, signer, *, ca: bool, san: str | None = None):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True,
                    content_commitment=False, key_encipherment=False, data_encipherment=False,
                    key_agreement=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            ).add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
        if san:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(san)]), critical=False
            ).add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = build("Test CA", "Test CA", ca_key, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = build(name, "Test CA", key, ca_key, ca=False, san=name)
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(pem))
    (tmp_path / "key.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"


@pytest.fixture
def tls_site(tmp_path, monkeypatch, fake_dns, settings):
    """SiteHandler over HTTPS as "site.test" (resolving to 127.0.0.1), trusted by the client."""
    import ssl

    from jobs import outbound

    from .servers import LocalServer, SiteHandler

    ca, cert, key = _certificates(tmp_path, "site.test")
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(ca))
    monkeypatch.setattr(outbound, "_tls_context", lambda: client_context)
    fake_dns["site.test"] = ["127.0.0.1"]
    fake_dns["other.test"] = ["127.0.0.1"]
    settings.BATCHHUB_PROCESSOR_ALLOW_PRIVATE = "127.0.0.1/32"
    with LocalServer(SiteHandler) as server:
        server.httpd.socket = server_context.wrap_socket(server.httpd.socket, server_side=True)
        yield server.port, server


def test_https_verifies_the_urls_name_on_the_checked_address(tls_site):
    port, server = tls_site
    result = fetch(scrape(), f"https://site.test:{port}/page")
    assert result.error is None, result.error
    assert result.output["title"] == "Le Café du Coin"
    assert result.output["final_url"] == f"https://site.test:{port}/page"
    assert server.requests[0]["headers"]["host"] == f"site.test:{port}"
    # The same server under a name its certificate does not carry: refused by verification.
    result = fetch(scrape(), f"https://other.test:{port}/page")
    assert "connection failed" in result.error and "certificate" in result.error.lower()
    assert len(server.requests) == 1


# --- at creation: a fixed host in the params is checked before the job exists ---------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("processor", "params", "message"),
    [
        (
            "http",
            {"url": "http://10.0.0.5/api/{name}"},
            "params.url: 10.0.0.5 is private: " + HINT,
        ),
        (
            "llm",
            {"base_url": "http://127.0.0.1:11434/v1", "model": "m", "prompt": "{name}"},
            "params.base_url: 127.0.0.1 is loopback: " + HINT,
        ),
        (
            "http",
            {"url": "http://metadata.test/latest/{name}"},
            "params.url: metadata.test (169.254.169.254) is cloud metadata: " + HINT,
        ),
    ],
)
def test_a_fixed_private_host_is_a_400_at_creation(
    api_alice, settings, fake_dns, processor, params, message
):
    import json

    from jobs.models import Job

    settings.BATCHHUB_PROCESSOR_ALLOW_PRIVATE = ""
    fake_dns["metadata.test"] = ["169.254.169.254"]
    response = api_alice.post(
        "/api/v1/jobs",
        {"rows": [{"name": "a"}], "processor": processor, "params": params},
        format="json",
    )
    assert response.status_code == 400, response.content
    body = response.json()
    assert message in json.dumps(body, ensure_ascii=False)
    assert not Job.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "allow"),
    [
        ("http://10.0.0.5/api/{name}", "10.0.0.0/8"),  # allowed by the operator
        ("{link}", ""),  # the host comes from the rows: checked at each connection
        ("http://{host}/api", ""),
        ("http://no-such-host.invalid/api/{name}", ""),  # the workers' DNS may differ
    ],
)
def test_hosts_not_known_to_be_private_are_accepted(api_alice, settings, url, allow):
    settings.BATCHHUB_PROCESSOR_ALLOW_PRIVATE = allow
    response = api_alice.post(
        "/api/v1/jobs",
        {
            "rows": [{"name": "a", "link": "https://example.com/", "host": "example.com"}],
            "processor": "http",
            "params": {"url": url, "url_encode": url != "{link}"},
        },
        format="json",
    )
    assert response.status_code == 201, response.content
