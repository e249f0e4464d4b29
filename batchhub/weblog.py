"""gunicorn's logger (the Procfile's `--logger-class`), with the API status polls answered from
the cache counted instead of written one line each.

A script polling a job asks for its status every second or faster, and gunicorn's access line
costs about a tenth of what such a poll costs the web process (docs/performance.md, "The API
poll, part by part"). Only the polls jobs/fast_status.py answered itself are summed up: always a
200 to a GET whose key the cache vouched for, counted by the rate limit. Every other request,
including every 401, 404 and 429 of the same URL (the stack answers those), keeps its own line.
The sum is written as an access line of its own once a minute per web process, at the first
request after the minute ends, so an operator still sees how many were served.

Health probes (batchhub/health.py) are summed the same way: a load balancer asks every second or
so, on every node. Only a 200 is counted; a probe that failed (503) or was refused keeps its line.
BATCHHUB_ACCESS_LOG_POLLS=1 writes every poll's and probe's line, as gunicorn's own logger does.
"""

from __future__ import annotations

import os
import re
import threading
import time

from gunicorn import glogging

from .envconfig import env_bool

# Set in a request's WSGI environ by jobs/fast_status.py when it answered the request itself.
ANSWERED_FROM_CACHE = "batchhub.answered_from_cache"
# Set by batchhub/health.py to the probe's path (/healthz, /readyz) when it answered one.
HEALTH_PROBE = "batchhub.health_probe"
SUMMARY_SECONDS = 60
# Signed links carry their credential in the query (results downloads, upload PUTs): whoever
# reads the access log could use one until it expires.
_TOKEN = re.compile(r"((?:^|[?&])token=)[^&\s]*", re.IGNORECASE)


def redact(text: str) -> str:
    return _TOKEN.sub(r"\1[redacted]", text)


class Logger(glogging.Logger):
    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.every_poll = env_bool("BATCHHUB_ACCESS_LOG_POLLS", False)
        self._lock = threading.Lock()
        self._polls = 0
        self._probes: dict[str, int] = {}
        self._since = time.monotonic()

    def access(self, resp, req, environ, request_time) -> None:
        if not self.access_log_enabled:
            return
        if not self.every_poll and getattr(resp, "status_code", None) == 200:
            probe = environ.get(HEALTH_PROBE)
            if environ.get(ANSWERED_FROM_CACHE) or probe:
                with self._lock:
                    if probe:
                        self._probes[probe] = self._probes.get(probe, 0) + 1
                    else:
                        self._polls += 1
                self._summary_due()
                return
        self._summary_due()
        super().access(resp, req, environ, request_time)

    def atoms(self, resp, req, environ, request_time) -> dict:
        atoms = super().atoms(resp, req, environ, request_time)
        for name in ("r", "q", "f"):  # request line, query string, referer
            if isinstance(atoms.get(name), str):
                atoms[name] = redact(atoms[name])
        return atoms

    def _summary_due(self) -> None:
        now = time.monotonic()
        if now - self._since < SUMMARY_SECONDS:
            return
        with self._lock:
            polls, probes, since = self._polls, self._probes, self._since
            if now - since < SUMMARY_SECONDS:
                return  # another thread wrote it
            self._polls, self._probes, self._since = 0, {}, now
        if probes:
            self.access_log.info(
                "%s health probes answered 200 in the last %d s (%s) (pid %d), "
                "not logged one by one",
                sum(probes.values()),
                now - since,
                ", ".join(f"{path} {count}" for path, count in sorted(probes.items())),
                os.getpid(),
            )
        if polls:
            self.access_log.info(
                "%s API status polls answered from the cache (200) in the last %d s "
                "(pid %d), not logged one by one",
                polls,
                now - since,
                os.getpid(),
            )
