"""Checks on the fields of a job's create or validate request that no serializer makes: a
multipart part sent twice (the parser keeps the last, silently)."""

from __future__ import annotations

from typing import Any

from batchhub.api import APIError


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
