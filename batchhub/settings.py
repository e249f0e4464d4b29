"""BatchHub settings: one module, everything from the environment.

The defaults give the embedded setup (SQLite + kombu's filesystem broker under ./var), so
`make run` works on a machine with no servers. Production sets DATABASE_URL (PostgreSQL),
CELERY_BROKER_URL (Redis) and CACHE_URL (Redis).
"""

from __future__ import annotations

import contextlib
import secrets
from pathlib import Path
from urllib.parse import urlparse

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

from .envconfig import (
    env_bool,
    env_float,
    env_int,
    env_list,
    env_log_level,
    env_rate,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("BATCHHUB_DATA_DIR", str(BASE_DIR / "var"))).resolve()

DEBUG = env_bool("DEBUG", False)
# The test suite's settings (batchhub/test_settings.py) turn this on: in-memory broker and cache,
# a cheap password hasher, nothing created under DATA_DIR.
TESTING = env_bool("BATCHHUB_TESTING", False)


def _secret_key() -> str:
    configured = env_str("SECRET_KEY", "")
    if configured:
        return configured
    # Embedded default: a key generated once and kept beside the data, so sessions and API key
    # digests survive restarts without anyone having to invent a secret.
    key_file = DATA_DIR / "secret_key"
    if key_file.exists():
        return key_file.read_text().strip()
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    key_file.write_text(key)
    key_file.chmod(0o600)
    return key


SECRET_KEY = _secret_key()
# On several machines each would generate its own: `check --deploy` warns (batchhub/checks.py).
BATCHHUB_SECRET_KEY_GENERATED = not env_str("SECRET_KEY", "")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# htmx posts refused for a stale token reload their page (batchhub/csrf_failure.py).
CSRF_FAILURE_VIEW = "batchhub.csrf_failure.csrf_failure"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "django_htmx",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "jobs",
    "apikeys",
    "accounts",
]

MIDDLEWARE = [
    # /healthz and /readyz for load balancers, before sessions, CSRF, auth, rate limits and the
    # ALLOWED_HOSTS check (a probe names the node's address): batchhub/health.py.
    "batchhub.health.HealthMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Before anything reads a body: a charset such as zlib is refused, not decoded.
    "batchhub.charset.TextCharsetMiddleware",
    # The API status poll answered from the cache below the rest of the stack (jobs/fast_status).
    "jobs.fast_status.FastStatusMiddleware",
    # The job page's poll answered from the cache when a fragment of this second answers it.
    "accounts.fast_page_poll.FastPagePollMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    # Django's AuthenticationMiddleware, the session's user read from a cache entry.
    "accounts.session_user.SessionUserMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last, so its process_exception sees a view's database error first: 503, not 500.
    "batchhub.dbbusy.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "batchhub.urls"
WSGI_APPLICATION = "batchhub.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "django.template.context_processors.csp",
                "batchhub.context_processors.site",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'batchhub.sqlite3'}")
try:
    _db = dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DB_CONN_MAX_AGE", 600))
except Exception as exc:  # dj-database-url raises several types for a bad URL
    raise ImproperlyConfigured(
        f"DATABASE_URL={DATABASE_URL!r} is not a database URL: {exc}"
    ) from exc
# The write-ahead log is cut back to this size whenever a checkpoint has let it start over;
# otherwise it stays as large as it ever grew (while readers kept checkpoints from catching up
# with a big job's deletion, say). New files get incremental auto-vacuum instead of a pragma here
# (batchhub/sqlite3/base.py; batchhub/dbspace.py gives their free pages back).
BATCHHUB_SQLITE_WAL_LIMIT_BYTES = 16 * 1024 * 1024
BATCHHUB_SQLITE_INIT_COMMAND = (
    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; "
    f"PRAGMA journal_size_limit={BATCHHUB_SQLITE_WAL_LIMIT_BYTES};"
)
if _db["ENGINE"] == "django.db.backends.sqlite3":
    # Web and worker share the file: WAL lets readers run beside the one writer, IMMEDIATE
    # transactions queue writers instead of failing with "database is locked" on upgrade, and
    # the writers take it in turn (batchhub/sqlite3/base.py).
    _db["ENGINE"] = "batchhub.sqlite3"
    # What Django's test runner gives the stock engine's SQLite, said outright: test tools
    # (pytest-django's per-process names) recognise only the stock engine's name.
    _db.setdefault("TEST", {}).setdefault("NAME", ":memory:")
    _db["CONN_MAX_AGE"] = 0
    _db.setdefault("OPTIONS", {}).update(
        {
            # Seconds a web request waits for the write lock before answering 503 (dbbusy.py);
            # engine transactions hold it for milliseconds. Workers wait longer (celery.py).
            "timeout": env_float("BATCHHUB_SQLITE_TIMEOUT", 5.0, minimum=0.1),
            "transaction_mode": "IMMEDIATE",
            "init_command": BATCHHUB_SQLITE_INIT_COMMAND,
        }
    )
    if not TESTING:
        # One that cannot be made is said in one line by each process's start (batchhub/dbfile.py).
        with contextlib.suppress(OSError):
            Path(_db["NAME"]).parent.mkdir(parents=True, exist_ok=True)
elif _db["ENGINE"] == "django.db.backends.postgresql":
    _db["CONN_HEALTH_CHECKS"] = True
    # A database host that drops packets would hold each connection attempt (a worker's start,
    # a request) for the system's TCP timeout, minutes; the URL's ?connect_timeout= wins.
    _db.setdefault("OPTIONS", {}).setdefault("connect_timeout", 10)
else:
    raise ImproperlyConfigured("DATABASE_URL must point at PostgreSQL or SQLite.")
DATABASES = {"default": _db}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache (rate limits and sessions, shared across processes) --------------------------------
CACHE_URL = env_str("CACHE_URL", "locmem" if TESTING else "")
if CACHE_URL.startswith(("redis://", "rediss://")):
    CACHES = {"default": {"BACKEND": "batchhub.cache.RedisCache", "LOCATION": CACHE_URL}}
elif CACHE_URL in ("", "file") or CACHE_URL.startswith("file://"):
    _cache_dir = urlparse(CACHE_URL).path if CACHE_URL.startswith("file://") else DATA_DIR / "cache"
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(_cache_dir),
        }
    }
elif CACHE_URL == "locmem":
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
else:
    raise ImproperlyConfigured(f"CACHE_URL={CACHE_URL!r}: use redis://…, file://PATH or locmem.")
# The job page's live part keeps its pieces that seldom change ({% cache %} in
# templates/jobs/detail.html) in each process's memory: keyed on everything they show, they are
# never stale, and a trip to a shared cache would cost more than rendering them.
CACHES["fragments"] = {
    "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
    "LOCATION": "fragments",
    "OPTIONS": {"MAX_ENTRIES": 2000},  # the template keeps them with no expiry: bounded by count
}

# --- Auth, i18n, static, media ------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
if TESTING:
    # Tests create users by the hundred; the production hasher costs ~0.5 s each.
    PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# Sessions are read through the cache (written through to the database): every page request,
# and every second of an open job page's polling, reads its session, and a cache read costs a
# fraction of a database query.
SESSION_ENGINE = "django.contrib.sessions.backends.cached_db"
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "jobs:list"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(DATA_DIR / "static")))
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(DATA_DIR / "media")))
MEDIA_URL = "media/"

STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if TESTING or DEBUG
            # A file collectstatic has not hashed yet is served under its own name, never a 500.
            else "batchhub.staticfiles.ForgivingManifestStorage"
        )
    },
}
# What ForgivingManifestStorage names by a file's plain name is served from the project's own
# static directories: a release's pages work before its collectstatic (the log asks for it).
WHITENOISE_USE_FINDERS = True
if env_str("BATCHHUB_STORAGE", "local") == "s3":
    # Several machines: uploads must be visible to every worker, so they go to S3-compatible
    # storage.
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": env_str("AWS_STORAGE_BUCKET_NAME", ""),
            "endpoint_url": env_str("AWS_S3_ENDPOINT_URL", "") or None,
            "region_name": env_str("AWS_S3_REGION_NAME", "") or None,
            # Empty: boto3 finds credentials itself (instance role, ~/.aws).
            "access_key": env_str("AWS_ACCESS_KEY_ID", "") or None,
            "secret_key": env_str("AWS_SECRET_ACCESS_KEY", "") or None,
            "location": env_str("BATCHHUB_S3_PREFIX", "uploads"),
            "file_overwrite": False,
            "default_acl": None,
        },
    }
    if not STORAGES["default"]["OPTIONS"]["bucket_name"]:
        raise ImproperlyConfigured("BATCHHUB_STORAGE=s3 needs AWS_STORAGE_BUCKET_NAME.")
elif env_str("BATCHHUB_STORAGE", "local") != "local":
    raise ImproperlyConfigured("BATCHHUB_STORAGE must be 'local' or 's3'.")

# Uploads over this many bytes go to a temporary file instead of memory (Django's default,
# spelt out).
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("BATCHHUB_MAX_JSON_BYTES", 20 * 1024 * 1024, minimum=1024)

BATCHHUB_BEHIND_PROXY = env_bool("BATCHHUB_BEHIND_PROXY", False)
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if BATCHHUB_BEHIND_PROXY else None
# Behind the proxy the site is served over HTTPS (the proxy terminates TLS): secure cookies.
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", BATCHHUB_BEHIND_PROXY)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# Only this site's own files run or style a page; an inline <script> or <style> needs the
# request's nonce (the API docs pages), and htmx is told not to inject its indicator styles.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF, CSP.NONCE],
    "img-src": [CSP.SELF, "data:"],
    "font-src": [CSP.SELF],
    "connect-src": [CSP.SELF],
    "object-src": [CSP.NONE],
    "base-uri": [CSP.NONE],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
}

# --- BatchHub limits ----------------------------------------------------------------------------
BATCHHUB_MAX_UPLOAD_BYTES = env_int("BATCHHUB_MAX_UPLOAD_BYTES", 100 * 1024 * 1024, minimum=1024)
BATCHHUB_MAX_ROWS = env_int("BATCHHUB_MAX_ROWS", 1_000_000, minimum=1)
BATCHHUB_MAX_ACTIVE_JOBS = env_int("BATCHHUB_MAX_ACTIVE_JOBS", 10, minimum=1)
BATCHHUB_MAX_FIELD_BYTES = env_int("BATCHHUB_MAX_FIELD_BYTES", 128 * 1024, minimum=16)
BATCHHUB_MAX_COLUMNS = env_int("BATCHHUB_MAX_COLUMNS", 500, minimum=1)
# A gzip upload may hold this much text once decompressed (by default what an uncompressed one
# may: gzip saves the transfer, it does not raise the limit); past it reading stops, so a small
# file that inflates to gigabytes cannot hold a web thread for minutes.
BATCHHUB_MAX_DECOMPRESSED_BYTES = env_int(
    "BATCHHUB_MAX_DECOMPRESSED_BYTES", BATCHHUB_MAX_UPLOAD_BYTES, minimum=1024
)
# One physical line of input: never more than its columns times the field size, nor this.
BATCHHUB_MAX_ROW_BYTES = env_int("BATCHHUB_MAX_ROW_BYTES", 8 * 1024 * 1024, minimum=1024)
# A client gets this long to send its request line and headers, and at most this long between
# two pieces of its body (batchhub/webworker.py); then its connection is closed.
BATCHHUB_CLIENT_IDLE_SECONDS = env_int("BATCHHUB_CLIENT_IDLE_SECONDS", 15, minimum=1)
# Checking an upload (validate, create, the dashboard's preview) stops after this many seconds.
BATCHHUB_VALIDATE_SECONDS = env_int("BATCHHUB_VALIDATE_SECONDS", 60, minimum=1)
# How long a signed results link (results_url) and a two-step upload's upload_url stay valid.
# The API status poll answered from the cache by jobs/fast_status.py (0: by the full stack).
BATCHHUB_FAST_STATUS = env_bool("BATCHHUB_FAST_STATUS", True)
BATCHHUB_LINK_SECONDS = env_int("BATCHHUB_LINK_SECONDS", 4 * 3600, minimum=60)
BATCHHUB_UPLOAD_URL_SECONDS = env_int("BATCHHUB_UPLOAD_URL_SECONDS", 3600, minimum=60)
BATCHHUB_RETENTION_DAYS = env_int("BATCHHUB_RETENTION_DAYS", 30, minimum=1)
BATCHHUB_ALLOW_SIGNUP = env_bool("BATCHHUB_ALLOW_SIGNUP", False)
# Wrong passwords allowed per account and per client address within the window (seconds).
BATCHHUB_LOGIN_MAX_FAILURES = env_int("BATCHHUB_LOGIN_MAX_FAILURES", 5, minimum=1)
BATCHHUB_LOGIN_MAX_FAILURES_PER_ADDRESS = env_int(
    "BATCHHUB_LOGIN_MAX_FAILURES_PER_ADDRESS", 20, minimum=1
)
BATCHHUB_LOGIN_FAILURE_WINDOW = env_int("BATCHHUB_LOGIN_FAILURE_WINDOW", 900, minimum=1)
BATCHHUB_DEFAULT_CONCURRENCY = env_int("BATCHHUB_DEFAULT_CONCURRENCY", 4, minimum=1)
BATCHHUB_MAX_CONCURRENCY = env_int("BATCHHUB_MAX_CONCURRENCY", 256, minimum=1)
# Rows a worker claims at once for cheap (CPU) processors; I/O processors use a multiple of their
# concurrency instead (jobs/chunks.py). Larger chunks spread each claim's fixed cost over more rows
# (docs/performance.md); pause and progress still go by ~0.25 s groups inside a chunk.
BATCHHUB_CHUNK_ROWS = env_int("BATCHHUB_CHUNK_ROWS", 5000, minimum=1)
# A claimed chunk must be finished (or its lease renewed) within this time, else it is reclaimed.
BATCHHUB_LEASE_SECONDS = env_int("BATCHHUB_LEASE_SECONDS", 120, minimum=5)
BATCHHUB_ROW_MAX_ATTEMPTS = env_int("BATCHHUB_ROW_MAX_ATTEMPTS", 3, minimum=1)
BATCHHUB_AUTOPAUSE_AFTER = env_int("BATCHHUB_AUTOPAUSE_AFTER", 10, minimum=1)
BATCHHUB_WEBHOOK_ALLOW_PRIVATE = env_str("BATCHHUB_WEBHOOK_ALLOW_PRIVATE", "")
# The networks beyond the public internet that the http, scrape and llm processors may reach:
# "" (none), "all" (all but cloud metadata) or a list such as "10.0.0.0/8,127.0.0.1/32" for an
# internal API or a model served on this machine (jobs/ssrf.py).
BATCHHUB_PROCESSOR_ALLOW_PRIVATE = env_str("BATCHHUB_PROCESSOR_ALLOW_PRIVATE", "")
BATCHHUB_WEBHOOK_TIMEOUT = env_float("BATCHHUB_WEBHOOK_TIMEOUT", 15.0, minimum=0.1)
# Threads per worker process that wait on webhook receivers (jobs/webhook_tasks.py); 0 runs each
# delivery in its task, holding the pool process. A thread waiting on a receiver holds a socket
# and no database connection: enough of them that a few hanging receivers leave most free.
BATCHHUB_WEBHOOK_THREADS = env_int("BATCHHUB_WEBHOOK_THREADS", 16, minimum=0)
# Of those, how many may wait on one destination (scheme, host and port) at once: the others of
# its deliveries wait their turn in the process, so that a receiver that hangs cannot take every
# thread from the healthy ones.
BATCHHUB_WEBHOOK_THREADS_PER_DESTINATION = env_int(
    "BATCHHUB_WEBHOOK_THREADS_PER_DESTINATION", 2, minimum=1
)
# The site's public address (https://batchhub.example.com) for absolute links outside a request,
# e.g. in webhook payloads; empty: such links are relative to the site.
BATCHHUB_BASE_URL = env_str("BATCHHUB_BASE_URL", "").rstrip("/")
# Extra processor classes by dotted path ("package.module:Class"), beside entry points.
BATCHHUB_PROCESSORS = env_list("BATCHHUB_PROCESSORS", [])
BATCHHUB_REAPER_INTERVAL = env_float("BATCHHUB_REAPER_INTERVAL", 5.0, minimum=1.0)
# Seconds between two runs of the step that gives an embedded (SQLite) database's free pages back
# to the file system (batchhub/dbspace.py); PostgreSQL's autovacuum needs no such step.
BATCHHUB_SPACE_INTERVAL = env_float("BATCHHUB_SPACE_INTERVAL", 60.0, minimum=1.0)
# CPU priority of worker processes (nice, 0 to 19): on a shared machine the web process and the
# database come first (batchhub/priority.py). 0 leaves the priority alone.
BATCHHUB_WORKER_NICE = env_int("BATCHHUB_WORKER_NICE", 10, minimum=0, maximum=19)

# Seconds /readyz waits for each of its checks (database, cache, broker), run side by side.
BATCHHUB_READYZ_TIMEOUT = env_float("BATCHHUB_READYZ_TIMEOUT", 2.0, minimum=0.1)

# --- Celery ---------------------------------------------------------------------------------------
# Unit tests enqueue into memory and drive the engine directly; end-to-end tests set a real broker.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "memory://" if TESTING else "filesystem://")
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's own, but each message written whole before a worker can take it.
    CELERY_BROKER_TRANSPORT = "batchhub.fsbroker:Transport"
    _broker_dir = DATA_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_broker_dir / "out"),
        "data_folder_out": str(_broker_dir / "out"),
        "processed_folder": str(_broker_dir / "processed"),
        # Broadcast (pidbox) messages; kombu's default is ./control in the working directory.
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # kombu polls the folder (default every 1 s): a job's loops are chains of ~2 s tasks, so
        # each would otherwise wait up to half its run time for its next message.
        "polling_interval": 0.1,
    }
    if not TESTING:
        (_broker_dir / "out").mkdir(parents=True, exist_ok=True)
        (_broker_dir / "processed").mkdir(parents=True, exist_ok=True)
        (_broker_dir / "control").mkdir(parents=True, exist_ok=True)
else:
    # Far above any task's run time (a task handles one chunk), so Redis never redelivers a task
    # that is still running; a dead worker's chunk comes back through its lease instead.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600)
    }
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# The prefork pool, checking for dead pool processes every 0.5 s instead of 5 s.
CELERY_WORKER_POOL = "batchhub.celery_pool:TaskPool"
# The consumer, reconnecting to a broker that came back within a second, not up to 30 s.
CELERY_WORKER_CONSUMER = "batchhub.celery_consumer:Consumer"
# A loop whose broker connection drops goes on with the chunk the database says it holds, and
# queues its next step once the broker is back (jobs/tasks.py): cancelling it would stall the
# chunk until its lease ran out. A task redelivered later finds nothing to do twice.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_QUEUE", "batchhub")
# A job's ingest and webhook deliveries have a queue of their own, which every worker consumes
# beside its -Q queues (batchhub/celery.py) and takes from in turn with the job steps': a new
# job starts, and an event made in a web request (a cancel, "Send again") goes out, at the next
# free pool process instead of behind a step of every running job.
BATCHHUB_EXPRESS_QUEUE = f"{CELERY_TASK_DEFAULT_QUEUE}.express"
CELERY_TASK_ROUTES = {
    "jobs.ingest": {"queue": BATCHHUB_EXPRESS_QUEUE},
    "jobs.deliver_webhook": {"queue": BATCHHUB_EXPRESS_QUEUE},
}
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BEAT_SCHEDULE = {
    "reap-stale-work": {"task": "jobs.reap", "schedule": BATCHHUB_REAPER_INTERVAL},
    "expire-jobs": {"task": "jobs.expire_jobs", "schedule": 3600.0},
}
if DATABASES["default"]["ENGINE"] == "batchhub.sqlite3":
    CELERY_BEAT_SCHEDULE["give-back-space"] = {
        "task": "jobs.give_back_space",
        "schedule": BATCHHUB_SPACE_INTERVAL,
    }

# --- REST framework -----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "apikeys.auth.APIKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": [
        "batchhub.parsers.BoundedJSONParser",
        "batchhub.parsers.PlainMultiPartParser",
        "batchhub.parsers.PlainFormParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "batchhub.api.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "EXCEPTION_HANDLER": "batchhub.api.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": ["batchhub.api.GroupRateThrottle"],
    # The client's address for limits keyed on it: REMOTE_ADDR, or behind the proxy the address
    # it appended to X-Forwarded-For (never what the client itself wrote there).
    "NUM_PROXIES": 1 if BATCHHUB_BEHIND_PROXY else 0,
    "DEFAULT_THROTTLE_RATES": {
        "read": env_rate("BATCHHUB_RATE_READ", "1200/min"),
        "create": env_rate("BATCHHUB_RATE_CREATE", "60/min"),
        "control": env_rate("BATCHHUB_RATE_CONTROL", "300/min"),
        "download": env_rate("BATCHHUB_RATE_DOWNLOAD", "120/min"),
    },
    "DATETIME_FORMAT": "%Y-%m-%dT%H:%M:%S.%fZ",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # `?format=` is the results download's own parameter (csv|jsonl|json), not a renderer switch.
    "URL_FORMAT_OVERRIDE": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "BatchHub API",
    "DESCRIPTION": "Upload a table, process every row with a processor, download the results.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    # Several models have a `status` field; name each choice set after its model.
    "ENUM_NAME_OVERRIDES": {
        "JobStatusEnum": "jobs.models.JobStatus",
        "RowStatusEnum": "jobs.models.RowStatus",
        "APIKeyStatusEnum": "apikeys.models.APIKeyStatus",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_log_level("LOG_LEVEL", "INFO")},
    # urllib3 (jobs/outbound.py) logs redirects and retries at INFO: up to a line per row of an
    # HTTP job, with URLs whose query strings may carry tokens.
    "filters": {"stalled_clients": {"()": "batchhub.api.OneLineForStalledClients"}},
    "loggers": {
        "django.db.backends": {"level": "INFO"},
        "urllib3": {"level": "WARNING"},
        "django.request": {"filters": ["stalled_clients"]},
    },
}
