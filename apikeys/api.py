"""`/api/v1/keys`: create (the only response that ever contains the key), list and revoke keys."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from batchhub.api import LimitOffsetPagination
from batchhub.request_fields import refuse_unknown_fields

from . import services
from .models import APIKey, APIKeyStatus


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable snake_case code, e.g. not_authenticated.")
    message = serializers.CharField(help_text="A human sentence.")
    details = serializers.JSONField(allow_null=True, help_text="Per-field errors or null.")


class ErrorSerializer(serializers.Serializer):
    """The body of every API error, whatever the status."""

    error = ErrorDetailSerializer()


class APIKeySerializer(serializers.ModelSerializer):
    id = serializers.CharField(source="public_id", read_only=True, help_text="key_<ULID>")
    prefix = serializers.CharField(
        read_only=True, help_text="The start of the key (bh_<id>_…), to recognise it; not usable."
    )
    status = serializers.ChoiceField(choices=APIKeyStatus.choices, read_only=True)

    class Meta:
        model = APIKey
        fields = [
            "id",
            "name",
            "prefix",
            "status",
            "created_at",
            "expires_at",
            "last_used_at",
            "revoked_at",
        ]
        read_only_fields = fields


class APIKeyCreatedSerializer(APIKeySerializer):
    key = serializers.SerializerMethodField(
        help_text="The full API key. It appears in this response only: store it now."
    )

    class Meta(APIKeySerializer.Meta):
        fields = [*APIKeySerializer.Meta.fields, "key"]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.STR)
    def get_key(self, obj: APIKey) -> str:
        return self.context["plaintext"]


class APIKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=services.NAME_MAX_LENGTH, help_text="e.g. ci-script")
    expires_at = serializers.DateTimeField(
        required=False, allow_null=True, help_text="Optional; must be in the future. Null: never."
    )

    def validate_expires_at(self, value):
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("The expiry must be in the future.")
        return value


_ERRORS = {
    401: OpenApiResponse(ErrorSerializer, description="Missing, unknown, expired or revoked key."),
    429: OpenApiResponse(ErrorSerializer, description="Rate limited; see Retry-After."),
}


@extend_schema_view(
    list=extend_schema(
        summary="List your API keys",
        description="Your keys, newest first, including expired and revoked ones. "
        "Never contains the key itself.",
        responses={200: APIKeySerializer(many=True), **_ERRORS},
    ),
    create=extend_schema(
        summary="Create an API key",
        description="Returns the full key once, in `key`; the server keeps only a digest.",
        request=APIKeyCreateSerializer,
        responses={
            201: APIKeyCreatedSerializer,
            400: OpenApiResponse(
                ErrorSerializer, description="invalid_request: bad name or expiry."
            ),
            **_ERRORS,
        },
        examples=[
            OpenApiExample(
                "Create", value={"name": "ci-script", "expires_at": None}, request_only=True
            )
        ],
    ),
    destroy=extend_schema(
        summary="Revoke an API key",
        description="The key stops working from the next request. Revoking a revoked key is a "
        "no-op. It stays in the list with status `revoked`.",
        responses={
            204: OpenApiResponse(description="Revoked."),
            404: OpenApiResponse(ErrorSerializer, description="No such key (or not yours)."),
            **_ERRORS,
        },
    ),
)
class APIKeyViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    serializer_class = APIKeySerializer
    pagination_class = LimitOffsetPagination
    lookup_field = "public_id"
    lookup_url_kwarg = "id"
    throttle_groups = {"create": "control", "destroy": "control", "list": "read"}

    def get_queryset(self):
        return services.list_keys(self.request.user)

    def create(self, request: Request) -> Response:
        # A misspelt "expires_at" would otherwise make a key that never expires.
        refuse_unknown_fields(request.data, APIKeyCreateSerializer().fields)
        given = APIKeyCreateSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        try:
            key, plaintext = services.create_key(request.user, **given.validated_data)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.message_dict) from None
        body = APIKeyCreatedSerializer(key, context={"plaintext": plaintext}).data
        response = Response(body, status=status.HTTP_201_CREATED)
        response["Cache-Control"] = "no-store"  # the body holds a secret
        return response

    def destroy(self, request: Request, id: str) -> Response:
        services.revoke_key(request.user, id)
        return Response(status=status.HTTP_204_NO_CONTENT)
