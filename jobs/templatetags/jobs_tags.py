"""Small formatting filters and drawings for the dashboard templates."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from django import template
from django.utils.safestring import SafeString

from .. import charts

register = template.Library()


@register.simple_tag
def segbar(segments: Any, small: bool = False) -> SafeString:
    """The bar of rows by state: `{% segbar segments %}` (charts.segbar_svg)."""
    return charts.segbar_svg(segments, small=small)


# The live partial's times: what `date:'c'` and `date:'Y-m-d H:i:s'` give with TIME_ZONE = "UTC",
# at a tenth of their cost per poll, and in UTC whatever TIME_ZONE says (the page writes "UTC").
@register.filter
def utc_iso(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat() if value else ""


@register.filter
def utc_seconds(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if value else ""


@register.filter
def event_label(event_type: str) -> str:
    """A timeline event's type for people: "webhook.attempt" → "Webhook attempt"."""
    return event_type.replace(".", " ").replace("_", " ").capitalize()


@register.filter
def duration(value: timedelta | None) -> str:
    """1 h 02 min, 3 min 07 s, 12 s, under 1 s; an em dash when there is none."""
    if value is None:
        return "—"
    return charts.duration_text(value.total_seconds())


@register.filter
def num(value: Any) -> Any:
    """A count as every page writes one: thousands grouped ("100,000"), like the rates."""
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value


@register.filter
def rate(value: float | None) -> str:
    return charts.rate_text(value)


@register.filter
def cell(value: Any) -> str:
    """A table cell: text as is, other JSON values as JSON, nothing as empty."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


@register.filter
def percent(part: int, whole: int) -> float:
    return round(100 * part / whole, 1) if whole else 0.0


@register.filter
def get_item(mapping: Any, key: str) -> Any:
    return mapping.get(key) if isinstance(mapping, dict) else None
