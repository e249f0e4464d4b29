"""API keys: the row keeps a public lookup id and a digest, never the key (see keyformat.py)."""

from __future__ import annotations

from datetime import datetime
from functools import partial

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from jobs.ids import new_id

from . import keyformat


class APIKeyStatus(models.TextChoices):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


class APIKeyQuerySet(models.QuerySet):
    def usable(self, now: datetime | None = None):
        now = now or timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=now)
        )


class APIKey(models.Model):
    public_id = models.CharField(
        max_length=40, unique=True, editable=False, default=partial(new_id, "key")
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_keys"
    )
    name = models.CharField(max_length=100)
    # Public part of the key, in clear: one indexed lookup finds the row (unique implies an index).
    lookup_id = models.CharField(max_length=keyformat.LOOKUP_LENGTH, unique=True, editable=False)
    # HMAC-SHA256 hex of the whole key; the key itself is never stored.
    digest = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    # Written at most once a minute (services.authenticate_key), so it is "last used, ±1 min".
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = APIKeyQuerySet.as_manager()

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix})"

    @property
    def prefix(self) -> str:
        return keyformat.display_prefix(self.lookup_id)

    def is_expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    @property
    def status(self) -> str:
        if self.is_revoked:
            return APIKeyStatus.REVOKED
        if self.is_expired():
            return APIKeyStatus.EXPIRED
        return APIKeyStatus.ACTIVE

    @property
    def is_active(self) -> bool:
        return self.status == APIKeyStatus.ACTIVE
