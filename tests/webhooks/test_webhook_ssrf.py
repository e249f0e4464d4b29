"""SSRF: webhook URLs may only reach public addresses, at creation and at every delivery."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured, ValidationError
from urllib3.exceptions import MaxRetryError

from batchhub.api import APIError
from jobs import creation, outbound, ssrf, webhooks
from jobs.models import Job, JobEvent

REFUSED = [
    ("http://127.0.0.1/hook", "loopback"),
    ("http://127.1.2.3:8080/hook", "loopback"),
    ("http://10.0.0.1/hook", "private"),
    ("http://172.16.5.4/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://169.254.1.1/", "link-local"),
    ("http://100.64.0.1/", "carrier-grade NAT"),
    ("http://0.0.0.0:8000/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[::1]/hook", "loopback"),
    ("http://[::ffff:127.0.0.1]/hook", "loopback (IPv4 127.0.0.1 inside IPv6)"),
    ("http://[::ffff:a00:1]/hook", "private (IPv4 10.0.0.1 inside IPv6)"),
    ("http://[::127.0.0.1]/", "loopback (IPv4 127.0.0.1 inside IPv6)"),
    ("http://[2002:7f00:1::1]/", "loopback (IPv4 127.0.0.1 inside IPv6)"),  # 6to4
    ("http://[64:ff9b::a9fe:a9fe]/", "cloud metadata (IPv4 169.254.169.254 inside IPv6)"),  # NAT64
    ("http://[fd00:ec2::254]/", "cloud metadata"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fc00::1]/", "private"),
    ("http://localhost:9000/hook", "loopback"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_refused_at_creation(url, reason):
    with pytest.raises(ValidationError) as info:
        ssrf.validate_webhook_url(url)
    message = info.value.messages[0]
    assert message.startswith("Webhook URLs must point at a public address")
    assert message.endswith(f"is {reason}.")


def test_name_resolving_to_loopback_is_refused(fake_dns):
    fake_dns["hooks.evil.test"] = ["93.184.216.34", "127.0.0.1"]  # one bad address is enough
    with pytest.raises(ValidationError, match=r"hooks.evil.test \(127.0.0.1\) is loopback"):
        ssrf.validate_webhook_url("https://hooks.evil.test/x")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/x", "must start with http:// or https://"),
        ("file:///etc/passwd", "must start with http:// or https://"),
        ("gopher://127.0.0.1:6379/_INFO", "must start with http:// or https://"),
        ("http:///nohost", "has no host"),
        ("http://example.com:99999/", "not valid"),
    ],
)
def test_bad_urls(url, message):
    with pytest.raises(ValidationError, match=message):
        ssrf.validate_webhook_url(url)


def test_unresolvable_host_is_refused_at_creation():
    with pytest.raises(ValidationError, match="could not be resolved"):
        ssrf.validate_webhook_url("https://no-such-host.invalid/x")


def test_public_addresses_pass(fake_dns):
    fake_dns["hooks.example.test"] = ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"]
    ssrf.validate_webhook_url("https://hooks.example.test/x")
    ssrf.validate_webhook_url("http://8.8.8.8:8080/x")
    ssrf.validate_webhook_url("http://[2001:4860:4860::8888]/x")


def test_allowlist_of_networks(settings):
    settings.BATCHHUB_WEBHOOK_ALLOW_PRIVATE = "127.0.0.1/32, 10.1.0.0/16"
    ssrf.validate_webhook_url("http://127.0.0.1:8000/hook")
    ssrf.validate_webhook_url("http://[::ffff:127.0.0.1]:8000/hook")  # same address, mapped
    ssrf.validate_webhook_url("http://10.1.2.3/hook")
    for url in (
        "http://127.0.0.2/",
        "http://10.0.0.1/",
        "http://169.254.169.254/",
        "http://[::1]/",
    ):
        with pytest.raises(ValidationError):
            ssrf.validate_webhook_url(url)


def test_allowlist_all_still_keeps_metadata_out(settings):
    settings.BATCHHUB_WEBHOOK_ALLOW_PRIVATE = "all"
    ssrf.validate_webhook_url("http://10.0.0.1/hook")
    ssrf.validate_webhook_url("http://[::1]/hook")
    with pytest.raises(ValidationError, match="cloud metadata"):
        ssrf.validate_webhook_url("http://169.254.169.254/")
    with pytest.raises(ValidationError, match="cloud metadata"):
        ssrf.validate_webhook_url("http://[::ffff:169.254.169.254]/")
    settings.BATCHHUB_WEBHOOK_ALLOW_PRIVATE = "169.254.169.254/32"  # only when named outright
    ssrf.validate_webhook_url("http://169.254.169.254/")


def test_bad_allowlist_is_a_configuration_error(settings):
    settings.BATCHHUB_WEBHOOK_ALLOW_PRIVATE = "127.0.0.0/8,not-a-network"
    with pytest.raises(ImproperlyConfigured, match="not-a-network"):
        ssrf.validate_webhook_url("http://127.0.0.1/")


def test_job_creation_refuses_private_url_with_400(db, wh_alice):
    """The engine's create service turns the refusal into the contract's 400 invalid_request."""
    with pytest.raises(APIError) as info:
        creation.create_job(
            wh_alice,
            processor="template",
            params={"template": "{a}"},
            source=creation.Source(rows=[{"a": "x"}]),
            webhook_url="http://169.254.169.254/latest/meta-data/",
        )
    assert info.value.status_code == 400
    assert info.value.error_code == "invalid_request"
    assert "cloud metadata" in str(info.value.detail)
    assert not Job.objects.exists()


# --- at delivery ----------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [u for u, _ in REFUSED[:12]])
def test_refused_at_delivery_without_a_request(url, make_job):
    # Written straight to the database, as if the rules had changed since the job was created.
    job = make_job(webhook_url=url)
    attempt = webhooks.deliver_once(job, "job.completed", "msg_x", 1)
    assert attempt.status_code is None and not attempt.delivered
    assert not attempt.retry  # waiting will not make the address public
    assert "public address" in attempt.error


def test_loopback_receiver_is_refused_at_delivery(run_task, receiver, make_job):
    """A real listener on 127.0.0.1 gets nothing without the allowlist; the refusal is an event."""
    job = make_job(webhook_url=receiver.url)
    run_task(job.pk, "job.completed", "msg_local")
    assert receiver.requests == []
    (event,) = JobEvent.objects.filter(job=job)
    assert event.type == "webhook.failed"
    assert "127.0.0.1 is loopback" in event.message and event.data["status_code"] is None


def test_dns_rebinding_is_caught_at_the_connection(receiver, make_job, fake_dns):
    """The name looks public to every check before the connection, then turns to 127.0.0.1."""
    answers = iter([["93.184.216.34"], ["93.184.216.34"]])
    fake_dns["rebind.test"] = lambda: next(answers, ["127.0.0.1"])
    url = f"http://rebind.test:{receiver.port}/hook"
    ssrf.validate_webhook_url(url)  # job creation: public

    job = make_job(webhook_url=url)
    attempt = webhooks.deliver_once(job, "job.completed", "msg_rebind", 1)  # pre-check: public

    assert receiver.requests == []  # the transport re-resolved, saw loopback, did not connect
    assert (
        attempt.error
        == "Webhook URLs must point at a public address; rebind.test (127.0.0.1) is loopback."
    )
    assert not attempt.retry


def _client() -> outbound.Client:
    return outbound.Client(policy=ssrf.WEBHOOKS, concurrency=1, timeout=2.0)


def test_transport_connects_to_the_checked_address_with_the_original_host(
    receiver, fake_dns, settings
):
    settings.BATCHHUB_WEBHOOK_ALLOW_PRIVATE = "127.0.0.0/8"
    fake_dns["receiver.test"] = ["127.0.0.1"]
    with _client() as client:
        response = client.request("POST", f"http://receiver.test:{receiver.port}/hook")
    assert response.status_code == 200
    assert receiver.requests[0].headers["host"] == f"receiver.test:{receiver.port}"


def test_transport_refuses_loopback_names_and_ignores_proxy_settings(
    receiver, fake_dns, monkeypatch
):
    # A proxy from the environment would take the connection (and the check) elsewhere.
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{receiver.port}")
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{receiver.port}")
    fake_dns["receiver.test"] = ["127.0.0.1"]
    for url in (f"http://receiver.test:{receiver.port}/hook", f"http://127.0.0.1:{receiver.port}/"):
        with _client() as client, pytest.raises(MaxRetryError) as info:
            client.request("POST", url)
        assert isinstance(info.value.reason, outbound.UnsafeAddress)
        assert "is loopback" in info.value.reason.text
    assert receiver.requests == []


def test_the_policies_are_apart(receiver, settings):
    # Allowing private receivers for webhooks does not let processors in, nor the reverse.
    settings.BATCHHUB_WEBHOOK_ALLOW_PRIVATE = "127.0.0.0/8"
    settings.BATCHHUB_PROCESSOR_ALLOW_PRIVATE = ""
    url = f"http://127.0.0.1:{receiver.port}/hook"
    with _client() as client:
        assert client.request("POST", url).status_code == 200
    processors = outbound.Client(policy=ssrf.PROCESSORS, concurrency=1, timeout=2.0)
    with processors, pytest.raises(MaxRetryError) as info:
        processors.request("POST", url)
    assert "BATCHHUB_PROCESSOR_ALLOW_PRIVATE" in info.value.reason.text
    assert len(receiver.requests) == 1
