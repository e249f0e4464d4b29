"""Job webhooks: the event a receiver gets when a job ends, signed to the Standard Webhooks spec.

This module is one attempt: the event, its signature, the POST, what it did (`deliver_once`) and
its JobEvent (`record_attempt`), and the wait before the next (`retry_delay`). When attempts run,
and that each runs once, is jobs/webhook_deliveries.py's. Every attempt is a JobEvent, so the job
page and `/events` show the history.

Spec: https://www.standardwebhooks.com/ — headers webhook-id / webhook-timestamp /
webhook-signature, the signature being `v1,` + base64(HMAC-SHA256(key, f"{id}.{ts}.{body}"))
where the key is the base64-decoded part of the `whsec_…` secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from urllib3.exceptions import HTTPError

from . import outbound, results, ssrf
from .models import Job, JobEvent, UserSettings
from .representation import job_representation, utc

USER_AGENT = "BatchHub-Webhooks/1.0"
# Rows ride along in the event only for small jobs; bigger ones are fetched from /results.
MAX_INLINE_ROWS = 1000
# Waits before attempt 2, 3, …; the last one repeats until the window is spent.
RETRY_DELAYS = (5, 30, 120, 600, 1800, 3600, 7200, 14400, 28800)
RETRY_WINDOW = 24 * 3600
JITTER = 0.2  # up to +20 %: spreads a burst of retries; only ever adds, so the window still holds
EXCERPT_BYTES = 300  # of the receiver's answer kept in the event, to help debug a failing receiver


# --- the event ------------------------------------------------------------------------------------


def job_payload(job: Job) -> dict:
    """The contract's job object, exactly as the API renders it."""
    return job_representation(job, request=None)


def event_type_for(job: Job) -> str:
    return f"job.{job.status}"


def build_event(job: Job, event_type: str) -> dict:
    event = {
        "type": event_type,
        "timestamp": utc(job.finished_at or job.updated_at),
        "job": job_payload(job),
    }
    if job.total <= MAX_INLINE_ROWS:
        columns = list(job.columns or [])
        event["data"] = [results.row_object(columns, *row) for row in results.iter_rows(job)]
    return event


def encode(event: dict) -> bytes:
    return json.dumps(
        event, cls=DjangoJSONEncoder, separators=(",", ":"), ensure_ascii=False
    ).encode()


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature of id.timestamp.body under a `whsec_…` secret."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256)
    return "v1," + base64.b64encode(mac.digest()).decode()


def signed_headers(
    secrets: list[str], webhook_id: str, timestamp: int, body: bytes
) -> dict[str, str]:
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        # Several signatures are space-separated (spec): during a rotation both secrets sign.
        "webhook-signature": " ".join(sign(s, webhook_id, timestamp, body) for s in secrets),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


def destination(url: str) -> str:
    """Where a URL's attempts wait: its scheme, host and port (`https://hooks.example.com:443`).
    A URL too broken to read is its own destination (it fails before any connection)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
    except ValueError:
        return url
    host = parts.hostname
    if not host:
        return url
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme.lower()}://{host}:{port}"


# --- scheduling -----------------------------------------------------------------------------------


def retry_delay(attempt: int, elapsed: float, rand: float | None = None) -> float | None:
    """Seconds to wait after failed attempt number `attempt` (1-based), or None to give up.

    `elapsed` is the time since the first attempt. Retries continue while it is under 24 h, so the
    last attempt happens at or after the 24 h mark: receivers get at least a day to come back.
    """
    if elapsed >= RETRY_WINDOW:
        return None
    base = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS)) - 1]
    return round(base * (1 + JITTER * (random.random() if rand is None else rand)), 1)


def nominal_schedule() -> list[float]:
    """Seconds after the first attempt at which each retry runs, without jitter (for docs/tests)."""
    at, times, attempt = 0.0, [], 1
    while (delay := retry_delay(attempt, at, rand=0.0)) is not None:
        at += delay
        times.append(at)
        attempt += 1
    return times


# --- one attempt ----------------------------------------------------------------------------------


@dataclass
class Attempt:
    """What one POST did. `retry` tells the task whether another attempt may help."""

    attempt: int
    url: str
    status_code: int | None = None
    duration_ms: int = 0
    error: str | None = None
    retry: bool = False
    delivered: bool = False
    excerpt: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def outcome(self) -> str:
        if self.status_code is not None:
            text = f"{self.status_code} in {self.duration_ms} ms"
            return f"{text} ({self.error})" if self.error else text
        return f"{self.error.rstrip('.')} after {self.duration_ms} ms"


def _excerpt(answer: outbound.Response) -> str:
    """The start of the receiver's answer: all that is read of it, since it could stream
    forever. The status is what counts: a body cut short by the deadline still delivered."""
    try:
        chunk = next(answer.iter_bytes(EXCERPT_BYTES), b"")
    except (HTTPError, OSError):
        chunk = b""
    return chunk[:EXCERPT_BYTES].decode("utf-8", "replace")


def _post(url: str, body: bytes, headers: dict[str, str], attempt: Attempt) -> None:
    # A client per delivery, closed after it (set-up is not the receiver's time).
    limit = settings.BATCHHUB_WEBHOOK_TIMEOUT
    # The whole attempt within the timeout, however slowly the receiver sends its answer.
    client = outbound.Client(
        policy=ssrf.WEBHOOKS, concurrency=1, timeout=limit, total_timeout=limit
    )
    started = time.monotonic()
    try:
        with client, client.stream("POST", url, body=body, headers=headers) as answer:
            attempt.status_code = answer.status_code
            attempt.excerpt = _excerpt(answer)
    except HTTPError as exc:
        failure = outbound.failure(exc)
        if failure.kind == "timeout":
            attempt.error = f"timed out ({limit:g} s)"
        elif failure.kind == "connection":
            attempt.error = f"connection failed ({failure.text})"
        else:
            attempt.error = failure.text
        # An address that is not public will not become so by waiting; DNS and receivers may.
        attempt.retry = not failure.permanent
    finally:
        attempt.duration_ms = round((time.monotonic() - started) * 1000)

    code = attempt.status_code
    if code is None:
        return
    if 200 <= code < 300:
        attempt.delivered = True
    elif code == 410:
        attempt.error = "receiver answered 410 Gone: no more retries"
    elif 300 <= code < 400:
        attempt.error = "redirects are not followed"
        attempt.retry = True
    else:
        attempt.retry = True


def deliver_once(job: Job, event_type: str, webhook_id: str, attempt_number: int) -> Attempt:
    """POST the event once and return what happened (no event is recorded here)."""
    url = job.webhook_url or ""
    attempt = Attempt(attempt=attempt_number, url=url)
    try:
        # Early, friendly refusal; the transport checks again against the address it connects to.
        ssrf.validate_webhook_url(url)
    except ValidationError as exc:
        unresolvable = getattr(exc, "code", None) == "unresolvable"
        attempt.error = exc.messages[0]
        attempt.retry = unresolvable
        return attempt
    body = encode(build_event(job, event_type))
    secrets = UserSettings.get_or_create_for(job.owner).signing_secrets()
    headers = signed_headers(secrets, webhook_id, int(time.time()), body)
    _post(url, body, headers, attempt)
    return attempt


def _pretty_wait(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def record_attempt(
    job: Job, webhook_id: str, event_type: str, attempt: Attempt, next_in: float | None
) -> JobEvent:
    """The JobEvent for one attempt: delivered, attempt (another will follow) or failed (final)."""
    message = f"POST {attempt.url} → {attempt.outcome} (attempt {attempt.attempt})"
    if attempt.delivered:
        kind = "webhook.delivered"
    elif next_in is not None:
        kind = "webhook.attempt"
        message += f"; retrying in {_pretty_wait(next_in)}"
    else:
        kind = "webhook.failed"
        message += "; giving up"
    return JobEvent.objects.create(
        job=job,
        type=kind,
        message=message,
        actor="system",
        data={
            "webhook_id": webhook_id,
            "event": event_type,
            "attempt": attempt.attempt,
            "status_code": attempt.status_code,
            "duration_ms": attempt.duration_ms,
            "error": attempt.error,
            "response": attempt.excerpt or None,
            "next_retry_in": next_in,
        },
    )
