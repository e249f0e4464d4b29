"""The job page's poll (its live part, once a second) answered below Django's stack from the
job's live status.

Each open job page asks for its live part every second (jobs/views.py `job_progress`). The
answer comes from the job's live status in the cache (jobs/progress_fragment.py: the fragment
made in this second, else one rendered from that status), yet the request went through every
middleware, URL resolution, the sign-in decorators and the view, several times what reading the
session, the user's entry and the job's status costs (docs/performance.md). This middleware sits
after jobs.fast_status and answers that one request when, and only when, all it needs is in the
Redis cache and vouches for it:

- the session, found in the cache under its cookie's key, as the session's own load finds it;
- the user it names, signed in by a backend in use, whose cache entry (accounts/session_user.py)
  still vouches for the sign-in as the stack's check would (active, the same session hash);
- the job's live status, readable (livestatus.current) and answering for that user (the owner,
  not expired: livestatus.read, as the view reads it).

Anything else goes on down the normal stack, which answers as it always has (a sign-in redirect,
a 404, the database's answer), taking what was read here instead of reading it again. The answer
is the stack's: the same fragment (it holds no CSRF token: jobs/progress_fragment.py), the same
`HX-Trigger` and 286, `Vary: Cookie` as the session middleware adds it, and the headers the
skipped middlewares add (batchhub/learnt_headers.py). tests/views/test_fast_page_poll.py
compares both paths. It is part of the fast status polls: BATCHHUB_FAST_STATUS=0 turns it off.
"""

from __future__ import annotations

import logging
from importlib import import_module
from types import SimpleNamespace

from django.conf import settings
from django.contrib.sessions.backends.cached_db import SessionStore as CachedDbSession
from django.http import HttpResponse
from django.utils.cache import patch_vary_headers

from batchhub.fast_path import FastPathMiddleware
from jobs import livestatus, poll, progress_fragment

from . import session_user

logger = logging.getLogger(__name__)

ROUTE = "jobs:progress"
# Sessions whose user is remembered, per process (each entry is two short strings).
_SESSIONS_KEPT = 4096


class FastPagePollMiddleware(FastPathMiddleware):
    route = ROUTE

    def __init__(self, get_response):
        super().__init__(get_response, lambda: HttpResponse(b""))
        # As SessionMiddleware takes it: once.
        self._session_store = import_module(settings.SESSION_ENGINE).SessionStore
        # Session key -> the user id its data named when its user's entry last vouched for it.
        self._users_of_sessions: dict[str, str] = {}

    def _answer(self, request) -> HttpResponse | None:
        public_id = self._job_id(request)
        session_key = request.COOKIES.get(settings.SESSION_COOKIE_NAME)
        if (
            public_id is None
            or not livestatus.plausible_id(public_id)
            or not session_key
            or settings.SESSION_SAVE_EVERY_REQUEST
        ):
            return None
        redis = livestatus._redis()
        if redis is None or not livestatus.current(public_id):
            return None
        try:
            request.get_host()  # a host not allowed: the stack answers its 400
            session = self._session_store(session_key)
            if (
                not isinstance(session, CachedDbSession)
                or session._cache is not redis
                or session.session_key is None  # a malformed key: the stack makes a new session
            ):
                return None
            # The user this session named last time: their entry comes in the same trip.
            known = self._users_of_sessions.get(session_key)
            also = None if known is None else session_user.cache_key(known)
            data, stored, entry = poll.session_and_live(redis, session.cache_key, public_id, also)
            # What is read here is not read again if the stack answers (jobs/poll.py).
            poll.hand_over_page(request, session_key, data, public_id, stored)
            if known is not None:
                session_user.hand_over_entry(request, known, entry)
            user_id = self._vouched_user_id(request, session_key, data)
            if user_id is None or stored is None:
                return None
            response = progress_fragment.live_answer(
                request, SimpleNamespace(pk=user_id), public_id, stored
            )
            if response is None:
                return None
            patch_vary_headers(response, ("Cookie",))  # the session was read
        except Exception:
            logger.debug("fast page poll: handing over to the stack", exc_info=True)
            return None
        return self._answered(request, response)

    def _vouched_user_id(self, request, session_key: str, data) -> int | None:
        """The signed-in user's id when their cache entry vouches for the session's sign-in."""
        if not isinstance(data, dict):
            return None  # not in the cache: the stack reads the database
        signed_in = session_user.session_sign_in(data)
        if signed_in is None:
            return None
        user_id, session_hash = signed_in
        entry = session_user.read_entry(request, user_id)
        if not session_user.vouches(entry, user_id, session_hash):
            return None
        users = self._users_of_sessions
        if users.get(session_key) != user_id:
            if len(users) >= _SESSIONS_KEPT:
                users.clear()  # atomic, unlike removing the oldest while other threads read
            users[session_key] = user_id
        return entry["id"]
