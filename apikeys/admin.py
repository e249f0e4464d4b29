"""Keys in the admin: list and revoke. The digest is never shown and nothing can be edited."""

from __future__ import annotations

from django.contrib import admin, messages
from django.utils import timezone

from .models import APIKey


@admin.register(APIKey)
class APIKeyAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "owner",
        "prefix",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    )
    list_filter = ("revoked_at", "expires_at", "created_at")
    search_fields = ("name", "lookup_id", "public_id", "owner__username", "owner__email")
    list_select_related = ("owner",)
    ordering = ("-created_at",)
    # `digest` is deliberately absent: it is not a secret on its own, but nobody needs to see it.
    fields = (
        "public_id",
        "owner",
        "name",
        "prefix",
        "created_at",
        "last_used_at",
        "expires_at",
        "revoked_at",
    )
    readonly_fields = fields
    actions = ["revoke_selected"]

    @admin.display(description="Key")
    def prefix(self, obj: APIKey) -> str:
        return obj.prefix

    def has_add_permission(self, request) -> bool:
        # A key must be shown to its owner once; the admin cannot do that, the owner's page can.
        return False

    @admin.action(description="Revoke selected API keys", permissions=["change"])
    def revoke_selected(self, request, queryset) -> None:
        count = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"Revoked {count} API key(s).", messages.SUCCESS)
