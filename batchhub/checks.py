"""System checks of the deployment (`manage.py check --deploy`)."""

from __future__ import annotations

from django.conf import settings
from django.core.checks import Tags, register
from django.core.checks import Warning as CheckWarning

SECRET_KEY_GENERATED = "batchhub.W001"
STATIC_NOT_COLLECTED = "batchhub.W002"


@register(Tags.security, deploy=True)
def secret_key_shared(app_configs=None, **kwargs) -> list[CheckWarning]:
    """A generated SECRET_KEY with a database other than SQLite: nodes that do not share one.

    Each node generates its own key when none is given (batchhub/settings.py), so a session, an
    API key, a signed link or a saved provider credential made on one node fails on the others.
    On SQLite there is one machine, and its key file is as good as any.
    """
    if not getattr(settings, "BATCHHUB_SECRET_KEY_GENERATED", False):
        return []
    engines = [db["ENGINE"] for db in settings.DATABASES.values()]
    if all(engine.endswith("sqlite3") for engine in engines):
        return []
    return [
        CheckWarning(
            "SECRET_KEY is not set in the environment: this node generated its own (kept in "
            "BATCHHUB_DATA_DIR/secret_key), and so does every other node sharing this database. "
            "Sessions, API keys, signed links and saved credentials made on one node then fail "
            "on the others (401).",
            hint="Set SECRET_KEY in the environment to one value, the same on every web and "
            "worker node.",
            id=SECRET_KEY_GENERATED,
        )
    ]


@register(Tags.staticfiles, deploy=True)
def static_collected(app_configs=None, **kwargs) -> list[CheckWarning]:
    """Files the pages name that `collectstatic` has not put in STATIC_ROOT's manifest.

    Pages still render (batchhub/staticfiles.py), with those files uncompressed and briefly cached.
    """
    from .staticfiles import not_collected

    problem = not_collected()
    if not problem:
        return []
    return [
        CheckWarning(
            f"Static files are not collected: {problem}.",
            hint="Run `python manage.py collectstatic --noinput` after each upgrade, then restart "
            "the web processes.",
            id=STATIC_NOT_COLLECTED,
        )
    ]
