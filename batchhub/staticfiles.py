"""Static files when `collectstatic` was not run: pages still render, and the log says what to do.

The manifest storage names each file by its content's hash from STATIC_ROOT/staticfiles.json,
written by `collectstatic`, and raises for a file missing from it: a release that skipped that
step answered every page with 500. Here a missing entry falls back to the file's plain name,
which WhiteNoise serves from the project's own static directories (WHITENOISE_USE_FINDERS), and
the web process says at its start which step was missed (wsgi.py), as `check --deploy` does.
A file that changed since it was collected would be named by its old hash, and pages would load
last release's CSS or scripts for a year (their cache lifetime): it is named plainly too.
"""

from __future__ import annotations

import filecmp
import functools
import json
import logging
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.contrib.staticfiles import finders
from whitenoise.storage import CompressedManifestStaticFilesStorage

logger = logging.getLogger(__name__)

WHAT_TO_DO = (
    "run `python manage.py collectstatic --noinput` (README, Upgrading) and restart the web "
    "process; until then these files are served under their plain names, without long caching"
)


class ForgivingManifestStorage(CompressedManifestStaticFilesStorage):
    """The manifest storage, with a file missing from the manifest named as it is."""

    def stored_name(self, name: str) -> str:
        if name in changed_since_collected(str(settings.STATIC_ROOT)):
            return name
        try:
            return super().stored_name(name)
        except ValueError:
            # Said once at the web's start (log_if_not_collected), not for each name: WhiteNoise
            # asks for every file it finds as it starts.
            return name


def _sources() -> dict[str, str]:
    """Each static file's name, as collectstatic would collect it, and the file it comes from."""
    ignored = apps.get_app_config("staticfiles").ignore_patterns  # as collectstatic ignores them
    found: dict[str, str] = {}
    for finder in finders.get_finders():
        for path, storage in finder.list(ignored):
            prefix = getattr(storage, "prefix", None)
            found.setdefault(f"{prefix}/{path}" if prefix else path, storage.path(path))
    return found


@functools.cache
def changed_since_collected(static_root: str) -> frozenset[str]:
    """The files whose source differs from the plain copy `collectstatic` left in static_root.

    Read once per process: a web process's files do not change under it.
    """
    changed = set()
    for name, source in _sources().items():
        try:
            if not filecmp.cmp(source, Path(static_root) / name, shallow=False):
                changed.add(name)
        except OSError:
            continue  # not collected at all: the manifest lacks it
    return frozenset(changed)


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return f"{', '.join(names[:3])}{more}"


def not_collected() -> str | None:
    """The files STATIC_ROOT's manifest lacks or holds older copies of, when the manifest
    storage is in use."""
    if settings.STORAGES["staticfiles"]["BACKEND"] != f"{__name__}.ForgivingManifestStorage":
        return None
    try:
        paths = json.loads((Path(settings.STATIC_ROOT) / "staticfiles.json").read_text())["paths"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"STATIC_ROOT ({settings.STATIC_ROOT}) has no readable manifest"
    missing = sorted(set(_sources()) - set(paths))
    changed = sorted(changed_since_collected(str(settings.STATIC_ROOT)) - set(missing))
    problems = []
    if missing:
        problems.append(f"STATIC_ROOT's manifest lacks {_listed(missing)}")
    if changed:
        problems.append(f"STATIC_ROOT holds older copies of {_listed(changed)}")
    return "; ".join(problems) or None


def log_if_not_collected() -> None:
    """At the web process's start: one line if pages would name files collectstatic has not made."""
    problem = not_collected()
    if problem:
        logger.warning("Static files are not collected: %s; %s.", problem, WHAT_TO_DO)
