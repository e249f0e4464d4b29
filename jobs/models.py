from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from . import rates
from .ids import new_id


class JobStatus(models.TextChoices):
    QUEUED = "queued"
    VALIDATING = "validating"
    PROCESSING = "processing"
    PAUSED = "paused"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL = frozenset(
    {JobStatus.COMPLETED, JobStatus.PARTIAL, JobStatus.FAILED, JobStatus.CANCELLED}
)
ACTIVE = frozenset(
    {
        JobStatus.QUEUED,
        JobStatus.VALIDATING,
        JobStatus.PROCESSING,
        JobStatus.PAUSED,
        JobStatus.FINALIZING,
    }
)


class RowStatus(models.TextChoices):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


COUNTERS = ("pending", "running", "succeeded", "failed", "cancelled")


class JobQuerySet(models.QuerySet):
    def visible(self):
        """Jobs a user may still see: an expired one is gone before housekeeping deletes it."""
        return self.filter(Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now()))

    def active(self):
        return self.filter(status__in=ACTIVE)


def upload_path(job: Job, filename: str) -> str:
    return f"uploads/{job.public_id}/{filename}"


# A rate_limit must fit its column on every database; a larger one made the insert fail (500).
MAX_RATE_LIMIT = 2_147_483_647


# What `input_format` holds, in words a user reads: "rows" is a JSON body's list of row objects.
INPUT_ROWS = "rows"
INPUT_FORMATS = {"csv": "CSV", "jsonl": "JSONL", INPUT_ROWS: "JSON rows (API)"}


class Job(models.Model):
    public_id = models.CharField(
        max_length=40, unique=True, editable=False, default=partial(new_id, "job")
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="jobs"
    )
    name = models.CharField(max_length=200, blank=True)
    processor = models.CharField(max_length=100)
    params = models.JSONField(default=dict, blank=True)

    input_file = models.FileField(upload_to=upload_path, blank=True, max_length=300)
    input_format = models.CharField(max_length=10, default="csv")  # csv | jsonl | rows
    input_size = models.BigIntegerField(default=0)
    encoding = models.CharField(max_length=40, blank=True)
    delimiter = models.CharField(max_length=4, blank=True)
    columns = models.JSONField(default=list, blank=True)
    # NULL: no id column chosen (ingest may still detect one); the API returns it as null.
    id_column = models.CharField(max_length=200, blank=True, null=True)  # noqa: DJ001
    column_map = models.JSONField(default=dict, blank=True)

    status = models.CharField(
        max_length=12, choices=JobStatus.choices, default=JobStatus.QUEUED, db_index=True
    )
    total = models.IntegerField(default=0)
    pending = models.IntegerField(default=0)
    running = models.IntegerField(default=0)
    succeeded = models.IntegerField(default=0)
    failed = models.IntegerField(default=0)
    cancelled = models.IntegerField(default=0)

    concurrency = models.PositiveIntegerField(default=4)
    # Requests per minute, all workers together.
    rate_limit = models.PositiveIntegerField(null=True, blank=True)
    max_attempts = models.PositiveSmallIntegerField(default=3)
    # Consecutive rate-limit answers from the outside service; auto-pause trips on a run of them.
    throttle_streak = models.PositiveIntegerField(default=0)
    resume_at = models.DateTimeField(null=True, blank=True)
    pause_reason = models.CharField(max_length=300, blank=True)
    # The last sync point's rows given back to wait for another try: why (the failed try's
    # reason) and when the next try is due; cleared by a sync point that gave none back. The
    # page says why the job does not move while they wait.
    retry_reason = models.CharField(max_length=200, blank=True)
    retry_at = models.DateTimeField(null=True, blank=True)
    usage = models.JSONField(default=dict, blank=True)  # e.g. LLM token totals
    # [[unix seconds, rows done], …] sampled as chunks commit: the rate, the ETA and the chart.
    samples = models.JSONField(default=list, blank=True)

    error_code = models.CharField(max_length=60, blank=True)
    error_message = models.TextField(blank=True)
    # NULL: no webhook; the API returns it as null.
    webhook_url = models.URLField(max_length=1000, blank=True, null=True)  # noqa: DJ001

    # NULL, not "": a job without a key stays out of the partial unique constraint below.
    idempotency_key = models.CharField(max_length=200, blank=True, null=True)  # noqa: DJ001
    request_hash = models.CharField(max_length=64, blank=True)
    # Signed results links carry this number; bumping it revokes every link handed out so far.
    link_version = models.PositiveIntegerField(default=0)

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Time spent working (processing or finalizing), pauses and the wait before a retry left out:
    # what the page's duration and average rate and the estimates from history divide by. None
    # for jobs started before it was kept: their duration is their span.
    worked_seconds = models.FloatField(null=True, blank=True)
    working_since = models.DateTimeField(null=True, blank=True)  # the current stretch's start
    # Bumped each time the job's loops are started afresh: a step of an older start stops.
    loop_generation = models.PositiveIntegerField(default=0)
    # Loops of the current start that stopped because every open chunk was held: a loop of an
    # earlier start, or one a lifted pause stopped, that gives a chunk back wakes one of them
    # (chunks.hand_on); no loop would come for that chunk before the reaper.
    idle_loops = models.PositiveIntegerField(default=0)
    # A loop's next step is a broker message until a worker takes it: when the job's newest one
    # was queued (when due, if delayed) and when one last started let the reaper tell steps that
    # wait their turn from lost ones (jobs/steps.py).
    step_queued_at = models.DateTimeField(null=True, blank=True)
    step_started_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["owner", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="job_unique_idempotency_key",
            )
        ]
        indexes = [models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return self.name or self.public_id

    @property
    def input_description(self) -> str:
        """The input's format in words for the pages ("CSV, utf-8"). Rows sent to the API as JSON
        are kept as a JSONL file of ours: its format and encoding are not the user's to read."""
        label = INPUT_FORMATS.get(self.input_format, self.input_format.upper())
        if self.input_format == INPUT_ROWS or not self.encoding:
            return label
        return f"{label}, {self.encoding}"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE

    @property
    def finishing_after_cancel(self) -> bool:
        """Rows in a request at the cancel still finish, written by their threads as answers come
        back (chunk_loop._Handover): the job's counts move, and a retry must wait for them."""
        return self.status == JobStatus.CANCELLED and self.running > 0

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.cancelled

    @property
    def progress(self) -> float:
        if not self.total:
            return 1.0 if self.is_terminal else 0.0
        return round(self.done / self.total, 4)

    @property
    def counts(self) -> dict[str, int]:
        return {"total": self.total, **{name: getattr(self, name) for name in COUNTERS}}

    @property
    def rows_per_second(self) -> float:
        """Rate over the last ~30 s of working time, as the job's page states it (pauses and
        waits left out); 0 while it is not processing or not known yet."""
        # A paused, queued or finished job processes nothing now: no recent rate, as its page
        # shows none (a finished one's average is its rows over its duration).
        if self.status != JobStatus.PROCESSING:
            return 0.0
        rate = rates.recent_rate(self.samples, timezone.now().timestamp())
        return round(rate, 2) if rate else 0.0

    @property
    def estimated_completion(self):
        if self.status != JobStatus.PROCESSING:
            return None
        now = timezone.now()
        since = self.working_since.timestamp() if self.working_since else None
        rate = rates.estimate_rate(self.samples, now.timestamp(), since)
        remaining = self.total - self.done
        if not rate or remaining <= 0:
            return None
        return now + timedelta(seconds=remaining / rate)

    @property
    def duration(self) -> timedelta | None:
        return self.worked()

    def worked(self, now: datetime | None = None) -> timedelta | None:
        """Time spent working up to `now`; None before the job started."""
        if not self.started_at:
            return None
        now = now or timezone.now()
        if self.worked_seconds is None:
            return (self.finished_at or now) - self.started_at
        seconds = self.worked_seconds
        if self.working_since is not None:
            seconds += (now - self.working_since).total_seconds()
        return timedelta(seconds=max(0.0, seconds))

    @property
    def error(self) -> dict[str, str] | None:
        if not self.error_code:
            return None
        return {"code": self.error_code, "message": self.error_message}


class Chunk(models.Model):
    """A range of row indexes [start, end) that one worker loop claims and processes at a time."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="chunks")
    seq = models.IntegerField()
    start = models.IntegerField()
    end = models.IntegerField()
    done = models.BooleanField(default=False)
    # Set while a worker holds the chunk; a chunk whose lease ran out is free again.
    lease_until = models.DateTimeField(null=True, blank=True)
    # Earliest time the chunk may be claimed (backoff of retried rows).
    available_at = models.DateTimeField(null=True, blank=True)
    # Claims so far (diagnostics: a chunk claimed far more often than others has a crashing row).
    claims = models.PositiveIntegerField(default=0)
    # Rows [inflight_start, inflight_end) started by the holder of a CPU processor's chunk without
    # writing each row: if the holder dies, the next one treats them as suspects.
    inflight_start = models.IntegerField(null=True, blank=True)
    inflight_end = models.IntegerField(null=True, blank=True)
    # Which process holds the lease (machine, pid, process start, thread): a loop on the same
    # machine that finds the holder gone takes the chunk at once instead of waiting for the lease.
    holder = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "seq"], name="chunk_unique_seq")]
        indexes = [models.Index(fields=["job", "done", "seq"])]

    def __str__(self) -> str:
        # job_id, not job.public_id: printing a chunk must not cost a query.
        return f"chunk {self.seq} [{self.start}, {self.end}) of job {self.job_id}"


class Row(models.Model):
    # The key is (job, index), with no surrogate id: one B-tree a row instead of two, for the
    # ingest's COPY and every sync point's UPDATE. No database foreign-key constraint either: its
    # per-row trigger cost as much as the COPY of the row itself; rows are only written by the
    # engine for a job it holds, and deleted with it (housekeeping.purge_job, and Django's
    # cascade).
    pk = models.CompositePrimaryKey("job", "index")
    job = models.ForeignKey(
        Job, on_delete=models.CASCADE, related_name="rows", db_index=False, db_constraint=False
    )
    index = models.IntegerField()
    ref = models.CharField(max_length=200)
    # Values in the order of job.columns (a list, not a dict: the keys would repeat on every row).
    data = models.JSONField()
    status = models.CharField(max_length=10, choices=RowStatus.choices, default=RowStatus.PENDING)
    output = models.JSONField(null=True, blank=True)
    # NULL: the row has no error (the results write null); the engine writes NULL, not "".
    error = models.TextField(null=True, blank=True)  # noqa: DJ001
    # A failed row's cause, the same text for every row failing for it (jobs/reasons.py): what
    # the job page counts rows by. NULL for rows failed before it was kept (counted by error).
    reason = models.TextField(null=True, blank=True)  # noqa: DJ001
    # Times the row was started; a row that keeps killing its worker fails at the limit.
    attempts = models.PositiveSmallIntegerField(default=0)

    class Meta:
        # Failed rows are the ones looked up by status (retry, "failed only" downloads); a
        # partial index keeps them at hand without every status change rewriting a full index.
        indexes = [
            models.Index(
                fields=["job", "index"], condition=Q(status="failed"), name="row_failed_idx"
            )
        ]

    def __str__(self) -> str:
        # job_id, not job.public_id: printing a row must not cost a query.
        return f"{self.public_id} of job {self.job_id}"

    @property
    def public_id(self) -> str:
        return f"row_{self.index + 1}"


class JobEvent(models.Model):
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(default=timezone.now)
    type = models.CharField(max_length=40)
    message = models.TextField(blank=True)
    actor = models.CharField(max_length=150, blank=True)  # a username, "system" or "api:<key>"
    data = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["at", "id"]
        indexes = [models.Index(fields=["job", "at"])]

    def __str__(self) -> str:
        return f"{self.type} at {self.at:%Y-%m-%d %H:%M:%S}"


class ProviderCredential(models.Model):
    """A user's secret for an outside service (an LLM provider's API key), encrypted at rest.

    Processors name it in their params (``"credential": "openai"``); the secret itself never
    appears in a job's params, the API or a page (jobs/credentials.py encrypts and decrypts).
    """

    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="provider_credentials"
    )
    name = models.SlugField(max_length=50)
    secret = models.TextField()  # a Fernet token, never the plaintext
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["owner", "name"], name="credential_unique_owner_name")
        ]

    def __str__(self) -> str:
        return self.name


def new_webhook_secret() -> str:
    """A Standard Webhooks secret: "whsec_" + base64 of 32 random bytes (the HMAC key)."""
    import base64
    import secrets

    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class UserSettings(models.Model):
    """Per-user settings; today the webhook signing secret (jobs/webhooks.py signs with it)."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="batchhub_settings"
    )
    webhook_secret = models.CharField(max_length=100, default=new_webhook_secret)
    # After a rotation deliveries are signed with both secrets for a while (Standard Webhooks allows
    # several signatures), so retries in flight still verify at receivers not yet updated.
    previous_webhook_secret = models.CharField(max_length=100, blank=True)
    rotated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "user settings"

    def __str__(self) -> str:
        return f"settings of {self.user}"

    @classmethod
    def get_or_create_for(cls, user) -> UserSettings:
        obj, _ = cls.objects.get_or_create(user=user)
        return obj

    def rotate_webhook_secret(self) -> str:
        self.previous_webhook_secret = self.webhook_secret
        self.webhook_secret = new_webhook_secret()
        self.rotated_at = timezone.now()
        self.save(update_fields=["webhook_secret", "previous_webhook_secret", "rotated_at"])
        return self.webhook_secret

    def signing_secrets(self, grace: timedelta = timedelta(hours=24)) -> list[str]:
        """The secrets to sign with now: the current one, plus the previous within `grace`."""
        secrets_ = [self.webhook_secret]
        if (
            self.previous_webhook_secret
            and self.rotated_at
            and timezone.now() - self.rotated_at < grace
        ):
            secrets_.append(self.previous_webhook_secret)
        return secrets_


STAGED = "staged"  # the storage folder of two-step uploads, one folder per upload


def staged_upload_path(upload: Upload, filename: str) -> str:
    return f"{STAGED}/{upload.public_id}/{filename}"


class Upload(models.Model):
    """A file sent ahead of its job (two-step upload): created empty, filled by one signed PUT,
    then named by `POST /jobs {"upload": id}`, which moves it into the job and deletes this."""

    public_id = models.CharField(
        max_length=40, unique=True, editable=False, default=partial(new_id, "upl")
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="uploads"
    )
    filename = models.CharField(max_length=200, default="input.csv")
    file = models.FileField(upload_to=staged_upload_path, blank=True, max_length=300)
    size = models.BigIntegerField(default=0)
    received_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.public_id


class WebhookDelivery(models.Model):
    """One event on its way to a job's webhook URL: when its next attempt is due, who holds it.

    The row, not a Celery message, is what a pending delivery is: a message only says "look at
    delivery N", so one lost with a worker restart, or redelivered by a broker, costs nothing
    (jobs/webhook_deliveries.py).
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        DELIVERED = "delivered"
        FAILED = "failed"  # given up: 410, a URL that can never be reached, or 24 h spent

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="webhook_deliveries")
    webhook_id = models.CharField(max_length=40, unique=True)
    event_type = models.CharField(max_length=40)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    first_attempt_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    # When a message for it is expected to arrive: the reaper sends another only well after.
    message_due_at = models.DateTimeField(null=True, blank=True)
    # A sender's lease: while it runs, another message for the same delivery finds it taken.
    claimed_until = models.DateTimeField(null=True, blank=True)
    claim = models.CharField(max_length=32, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status="pending"),
                name="webhook_delivery_due",
            )
        ]

    def __str__(self) -> str:
        return f"{self.webhook_id} ({self.event_type}, {self.status})"
