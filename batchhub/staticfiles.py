"""Static files when `collectstatic` was not run: pages still render, and the log says what to do.

The manifest storage names each file by its content's hash from STATIC_ROOT/staticfiles.json,
written by `collectstatic`, and raises for a file missing from it: a release that skipped that
step answered every page with 500. Here a missing entry falls back to the file's plain name,
which WhiteNoise serves from the project's own static directories (WHITENOISE_USE_FINDERS), and
the web process says at its start which step was missed (wsgi.py), as `check --deploy` does.
"""

from __future__ import annotations

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
        try:
            return super().stored_name(name)
        except ValueError:
            # Said once at the web's start (log_if_not_collected), not for each name: WhiteNoise
            # asks for every file it finds as it starts.
            return name


def not_collected() -> str | None:
    """The files STATIC_ROOT's manifest lacks, when the manifest storage is in use."""
    if settings.STORAGES["staticfiles"]["BACKEND"] != f"{__name__}.ForgivingManifestStorage":
        return None
    try:
        paths = json.loads((Path(settings.STATIC_ROOT) / "staticfiles.json").read_text())["paths"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"STATIC_ROOT ({settings.STATIC_ROOT}) has no readable manifest"
    ignored = apps.get_app_config("staticfiles").ignore_patterns  # as collectstatic ignores them
    found = set()
    for finder in finders.get_finders():
        for path, storage in finder.list(ignored):
            prefix = getattr(storage, "prefix", None)
            found.add(f"{prefix}/{path}" if prefix else path)
    missing = sorted(found - set(paths))
    if not missing:
        return None
    more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
    return f"STATIC_ROOT's manifest lacks {', '.join(missing[:3])}{more}"


def log_if_not_collected() -> None:
    """At the web process's start: one line if pages would name files collectstatic has not made."""
    problem = not_collected()
    if problem:
        logger.warning("Static files are not collected: %s; %s.", problem, WHAT_TO_DO)
