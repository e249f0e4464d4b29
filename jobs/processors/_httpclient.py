"""What the network processors (llm, http, scrape) share: one pooled HTTP client per processor
instance (jobs/outbound.py, under the processors' SSRF policy), the mapping of HTTP answers and
transport failures onto row errors and retries, Retry-After parsing, dotted paths into JSON and
column templates.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote, urlsplit

from urllib3.exceptions import HTTPError

from jobs import outbound, ssrf

from .base import ParamsError, RetryableError, RowError
from .template import check_filled_size, repeated_fields, template_fields

DEFAULT_USER_AGENT = outbound.DEFAULT_USER_AGENT
# A service asking for more than a day is treated as a day: the job pauses, it does not vanish.
MAX_RETRY_AFTER = 86_400.0


def make_client(
    *,
    concurrency: int,
    timeout: float,
    follow_redirects: bool = False,
    max_redirects: int = 20,
    headers: Mapping[str, str] | None = None,
) -> outbound.Client:
    """A processor's client: public addresses only, unless BATCHHUB_PROCESSOR_ALLOW_PRIVATE."""
    return outbound.Client(
        policy=ssrf.PROCESSORS,
        concurrency=concurrency,
        timeout=timeout,
        follow_redirects=follow_redirects,
        max_redirects=max_redirects,
        headers=headers,
    )


def check_destination(url: str, param: str) -> None:
    """ParamsError if `url`'s host is fixed (no placeholder in it) and resolves to an address the
    processors may not reach. A name that does not resolve here passes: the workers may see
    another DNS, and each row says so if they cannot resolve it either."""
    try:
        if "{" in urlsplit(url).netloc:
            return  # the host comes from the rows: checked at each connection
        host, _scheme, port = ssrf.split_url(url)
        ssrf.checked_addresses(host, port, ssrf.PROCESSORS)
    except (ValueError, ssrf.UnresolvableHost):
        return  # not a URL a row could request (each row says why), or not resolvable here
    except ssrf.UnsafeURL as exc:
        if exc.code == "private_address":
            raise ParamsError(f"params.{param}: {exc.messages[0]}") from None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP-date
    (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def check_response(response: outbound.Response, *, service: str) -> None:
    """Map a non-2xx answer: 429 slows the job down, 5xx is retried, another status fails
    the row."""
    status = response.status_code
    if 200 <= status < 300:
        return
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    if status == 429:
        reason = f"{service} answered 429 Too Many Requests"
        raise RetryableError(
            reason + _after(retry_after),
            retry_after=retry_after,
            rate_limited=True,
            reason=reason,
        )
    # The status is the cause; the body that came with it (ids, times) is the row's own.
    reason = f"{service} answered {status} {response.reason_phrase}".rstrip()
    if status >= 500:
        raise RetryableError(reason + _after(retry_after), retry_after=retry_after, reason=reason)
    raise RowError(reason + _snippet(response), reason=reason)


def _after(retry_after: float | None) -> str:
    return f" (Retry-After {retry_after:g} s)" if retry_after is not None else ""


def _snippet(response: outbound.Response, limit: int = 200) -> str:
    text = response.text.strip()
    if not text:
        return ""
    text = " ".join(text.split())
    return ": " + (text[:limit] + "…" if len(text) > limit else text)


@contextmanager
def transport_errors(service: str) -> Iterator[None]:
    """Turn the client's failures into the engine's vocabulary.

    Timeouts and dropped connections are the other side's trouble and may pass: retry. A URL
    that cannot be requested at all, a private address, a body that cannot be sent, or a redirect
    loop will fail the same way every time: row error.
    """
    try:
        yield
    except outbound.BodyError as exc:
        raise RowError(str(exc)) from None
    except HTTPError as exc:
        raise _mapped(exc, service) from None


def _mapped(exc: HTTPError, service: str) -> Exception:
    failure = outbound.failure(exc)
    kind, text = failure
    # The reason leaves out what names the row's own host, URL or address.
    if kind == "timeout":
        message = reason = f"{service} timed out ({text})"
    elif kind == "bad_url":
        message = f"{service}: the URL cannot be requested ({text})"
        reason = f"{service}: the URL cannot be requested"
    elif kind == "decode":
        message = f"{service}: the answer could not be decoded ({text})"
        reason = f"{service}: the answer could not be decoded"
    elif kind == "connection":
        message = f"{service}: connection failed ({text})"
        reason = f"{service}: connection failed ({_connection_cause(text)})"
    else:  # unsafe, unresolvable, redirects: the text says it all
        message = f"{service}: {text}"
        reason = f"{service}: {_KIND_REASONS[kind]}" if kind in _KIND_REASONS else None
    if failure.permanent:
        return RowError(message, reason=reason)
    return RetryableError(message, reason=reason)


_KIND_REASONS = {
    "unsafe": "the address is not one the processors may reach",
    "unresolvable": "the host could not be resolved",
}
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^,;()\]]+)")


def _connection_cause(text: str) -> str:
    """The words after urllib3's "[Errno …]" (Connection refused, Network is unreachable), else
    the exception's name."""
    found = _ERRNO.search(text)
    return found.group(1).strip().rstrip(".'\"") if found else text.split(":", 1)[0]


def env_value(name: str, *, what: str) -> str:
    """A value from an environment variable on the worker; missing is a row error (fix, retry)."""
    value = os.environ.get(name)
    if not value:
        raise RowError(f"The environment variable {name} ({what}) is not set on the worker.")
    return value


_MISSING = object()


def dotted_get(data: Any, path: str) -> Any:
    """``data.items.0.name``: object keys by name, list items by index; None when absent."""
    current = data
    for part in path.split("."):
        if isinstance(current, Mapping):
            current = current.get(part, _MISSING)
        elif isinstance(current, list) and (
            part.isdigit() or (part.startswith("-") and part[1:].isdigit())
        ):
            index = int(part)
            current = current[index] if -len(current) <= index < len(current) else _MISSING
        else:
            current = _MISSING
        if current is _MISSING:
            return None
    return current


def cell(value: Any) -> Any:
    """An output cell: scalars as they are, objects and lists as compact JSON text."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def check_template(template: str, param: str) -> list[str]:
    """Column names in a template, with errors naming the param they came from."""
    try:
        return template_fields(template)
    except ParamsError as exc:
        raise ParamsError(str(exc).replace("params.template", f"params.{param}", 1)) from None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    # Numbers and booleans as JSON spells them (true, not True), objects as compact JSON.
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def fill(template: str, values: Mapping[str, Any], *, url_encode: bool = False) -> str:
    """Fill a checked template with the row's columns (absent or empty cells become "")."""
    names = template_fields(template)
    missing = [name for name in names if name not in values]
    if missing:
        raise RowError(f"The row has no column {missing[0]!r} (used in a template).")
    filled = {
        name: quote(_text(values[name]), safe="") if url_encode else _text(values[name])
        for name in names
    }
    if repeats := repeated_fields(template):
        check_filled_size(repeats, filled.__getitem__)
    try:
        return template.format_map(filled)
    except (ValueError, TypeError) as exc:
        raise RowError(f"The template could not be filled: {exc}") from None


def json_template_strings(value: Any) -> Iterator[str]:
    """Every string inside a JSON value (keys included): each is a template."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from json_template_strings(item)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from json_template_strings(item)


def fill_json(value: Any, values: Mapping[str, Any]) -> Any:
    """A JSON body whose strings are templates. A string that is exactly one placeholder keeps the
    cell's own type (a number stays a number), so ``{"n": "{count}"}`` sends ``{"n": 3}``."""
    if isinstance(value, str):
        names = template_fields(value)
        if len(names) == 1 and value == "{" + names[0] + "}":
            if names[0] not in values:
                raise RowError(f"The row has no column {names[0]!r} (used in the body).")
            return values[names[0]]
        return fill(value, values)
    if isinstance(value, list):
        return [fill_json(item, values) for item in value]
    if isinstance(value, dict):
        return {fill(key, values): fill_json(item, values) for key, item in value.items()}
    return value
