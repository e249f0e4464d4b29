"""The API status poll's JSON body, rendered once a second per job and state.

Every script polling a running job asks for the same object many times a second, and rendering
it (the job read from its live status, the contract's dict, a signed results link, JSON) is most
of what jobs/fast_status.py spends on a poll. The body depends only on what the key below names:
the job's live-status payload text (every field the object shows), the second (the signed link's
expiry and the estimate are whole-second or finer figures of now), the scheme and host (the
links) and the signing settings (SECRET_KEY, BATCHHUB_LINK_SECONDS). So a body made in this
second for the same payload is the body a fresh render would give, and is reused.

Nothing per request is taken from the memo: the caller checks the API key, counts the rate limit
and answers GET only, as before; here the job's owner and expiry are checked against the asking
user on every answer, as livestatus.read checks them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.utils import timezone

from . import livestatus, second_memo
from .representation import base_url

_memo = second_memo.SecondMemo(512)


def body(request, user, public_id: str, live: Any, render: Callable[[Any], bytes]) -> bytes | None:
    """The poll's body for `user`'s job `public_id` from its live-status key as read (`live`),
    or None: not answerable from the cache (missing, someone else's, expired), the stack answers.

    `render(job)`: the body for a job read from the key, when this second has none yet."""
    if not isinstance(live, tuple):
        return None  # no key (or not read): livestatus.read would answer None
    second = second_memo.current_second()
    key = (
        public_id,
        live[1],
        second,
        base_url(request),
        settings.SECRET_KEY,
        settings.BATCHHUB_LINK_SECONDS,
    )
    user_id = getattr(user, "pk", None)
    hit = _memo.get(key, second)
    if hit is not None:
        owner_id, expires_at, text = hit
        if (
            owner_id == user_id
            and (expires_at is None or expires_at > timezone.now())
            and livestatus.current(public_id)
        ):
            return text
    job = livestatus.read(user, public_id, live)
    if job is None:
        return None
    text = render(job)
    _memo.put(key, (job.owner_id, job.expires_at, text), second)
    return text


def clear() -> None:
    _memo.clear()
