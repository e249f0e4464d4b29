"""Which column of a file most likely feeds a processor input: by name first, then by content.

Used to pre-select the column selects of the new-job page; the person can always pick another.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Column names people give to what an input means, most likely first.
SYNONYMS: dict[str, tuple[str, ...]] = {
    "text": (
        "text",
        "content",
        "body",
        "message",
        "comment",
        "review",
        "description",
        "sentence",
        "tweet",
        "post",
        "summary",
        "note",
        "feedback",
        "title",
    ),
    "url": ("url", "link", "href", "website", "web", "page", "site", "homepage", "uri"),
}


def _words(name: str) -> set[str]:
    cleaned = "".join(ch if ch.isalnum() else " " for ch in name.lower())
    return set(cleaned.split())


def _looks_like_url(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower().startswith(("http://", "https://"))


def _is_number(value: Any) -> bool:
    if isinstance(value, (int, float)):
        return True
    try:
        float(str(value))
    except ValueError:
        return False
    return True


def best_column(
    name: str, columns: Sequence[str], preview: Sequence[dict[str, Any]]
) -> tuple[str, str]:
    """(column, why) for the input `name`; ("", "") when nothing fits."""
    if name in columns:
        return name, "same name"
    lowered = {c.lower(): c for c in columns}
    for synonym in (name, *SYNONYMS.get(name, ())):
        if synonym in lowered:
            return lowered[synonym], "its name"
    for synonym in (name, *SYNONYMS.get(name, ())):
        for column in columns:
            if synonym in _words(column):
                return column, "its name"
    values = {c: [row.get(c) for row in preview if row.get(c) not in (None, "")] for c in columns}
    if name == "url" or name.endswith("url"):
        scored = [(sum(map(_looks_like_url, v)) / len(v), c) for c, v in values.items() if v]
        scored = [s for s in scored if s[0] >= 0.5]
        if scored:
            return max(scored)[1], "its values are links"
        return "", ""
    # Anything else reads text: the column with the longest words-and-spaces values.
    scored = []
    for column, vals in values.items():
        texts = [str(v) for v in vals if not _is_number(v) and not _looks_like_url(v)]
        if texts and len(texts) >= len(vals) / 2:
            scored.append((sum(len(t) for t in texts) / len(texts), column))
    if scored:
        return max(scored)[1], "its values are the longest text"
    return "", ""
