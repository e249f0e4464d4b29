"""Checks on the fields of an API request that no serializer makes: a field it does not know (a
serializer drops it, so a typo such as `concurency` would go unnoticed) and a multipart part sent
twice (the parser keeps the last, silently)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any

from batchhub.api import APIError

MAX_NAMED = 20
CSRF_FIELD = "csrfmiddlewaretoken"


def refuse_repeated_parts(data: Any) -> None:
    """A multipart body names each part once; two `file` parts would silently become one."""
    getlist = getattr(data, "getlist", None)
    if getlist is None:
        return  # a JSON object: its parser already kept one value per key
    repeated = {name: len(getlist(name)) for name in data if len(getlist(name)) > 1}
    if not repeated:
        return
    details = {
        name: [f"Sent {count} times; send it once."] for name, count in sorted(repeated.items())
    }
    if "file" in repeated:
        message = f"Send one file: the request has {repeated['file']} file parts."
    else:
        name = sorted(repeated)[0]
        message = f"Send {name} once: the request has it {repeated[name]} times."
    raise APIError(message, details=details)


def refuse_unknown_fields(
    data: Any,
    known: Iterable[str],
    *,
    elsewhere: Mapping[str, str] | None = None,
) -> None:
    """A 400 naming every field of `data` (a JSON object or form) not in `known`, with the close
    known name when there is one. `elsewhere` maps fields taken in another form of the request
    to where they go (e.g. JSON-only fields in a multipart body)."""
    if not isinstance(data, Mapping):
        return  # not an object: the serializer says so
    # A browser's form carries Django's CSRF token beside its fields (session clients).
    known = [*known, CSRF_FIELD]
    unknown = [str(name) for name in data if name not in known]
    if not unknown:
        return
    details, phrases = {}, []
    # Bounded: a body of a million stray keys gets a short answer, and a long key is cut.
    for name in unknown[:MAX_NAMED]:
        shown = name if len(name) <= 60 else f"{name[:59]}…"
        where = (elsewhere or {}).get(name)
        close = difflib.get_close_matches(name, known, n=1) if len(name) <= 60 else []
        if where:
            details[shown] = [f"Not taken here: {where}."]
            phrases.append(f"'{shown}' ({where})")
        elif close:
            details[shown] = [f"Unknown field; did you mean '{close[0]}'?"]
            phrases.append(f"'{shown}' (did you mean '{close[0]}'?)")
        else:
            details[shown] = ["Unknown field."]
            phrases.append(f"'{shown}'")
    if len(unknown) > MAX_NAMED:
        phrases.append(f"and {len(unknown) - MAX_NAMED:,} more")
    label = "Unknown field" if len(unknown) == 1 else "Unknown fields:"
    raise APIError(f"{label} {', '.join(phrases)}.", details=details)
