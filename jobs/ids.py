"""Opaque public ids: a type prefix and a ULID, e.g. job_01JD3…; sortable by creation time."""

from __future__ import annotations

from ulid import ULID


def new_id(prefix: str) -> str:
    return f"{prefix}_{ULID()}"
