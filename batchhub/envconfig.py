"""Small typed readers for environment settings: a bad value stops start-up with a clear message."""

from __future__ import annotations

import logging
import os
import re

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use 1/0, true/false, yes/no).")


def env_int(
    name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip().replace("_", ""))
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a whole number.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={raw!r} must be at least {minimum}.")
    if maximum is not None and value > maximum:
        raise ImproperlyConfigured(f"{name}={raw!r} must be at most {maximum}.")
    return value


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={raw!r} must be at least {minimum}.")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


# DRF's SimpleRateThrottle.parse_rate reads a rate's period by its first letter alone (s, m, h,
# d), so "100/fortnight" fails on the first request (500) and "100/month" would mean a minute:
# only the spellings that mean what that letter does are accepted.
_RATE_UNITS = {
    "s": ("s", "sec", "secs", "second", "seconds"),
    "m": ("m", "min", "mins", "minute", "minutes"),
    "h": ("h", "hr", "hrs", "hour", "hours"),
    "d": ("d", "day", "days"),
}
_RATE_UNIT_NAMES = {unit for units in _RATE_UNITS.values() for unit in units}
_RATE = re.compile(r"(\d+)\s*/\s*([a-z]+)")


def env_rate(name: str, default: str) -> str:
    """A rate limit as DRF reads it ("100/min"): a positive whole number, "/", a unit."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    match = _RATE.fullmatch(raw.strip().lower())
    if match is None or match.group(2) not in _RATE_UNIT_NAMES:
        raise ImproperlyConfigured(
            f"{name}={raw!r} is not a rate: use a number of requests per s, min, hour or day, "
            "e.g. 100/min."
        )
    count, unit = match.groups()
    if int(count) < 1:
        # DRF would refuse every request: a limit of none a period.
        raise ImproperlyConfigured(f"{name}={raw!r}: the number of requests must be at least 1.")
    return f"{int(count)}/{unit}"


def env_log_level(name: str, default: str) -> str:
    """A level name the logging module knows (DEBUG, INFO, WARNING, ERROR, CRITICAL)."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().upper()
    if value not in logging.getLevelNamesMapping():
        raise ImproperlyConfigured(
            f"{name}={raw!r} is not a log level (use DEBUG, INFO, WARNING, ERROR or CRITICAL)."
        )
    return value
