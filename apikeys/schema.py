"""OpenAPI description of API key authentication (drf-spectacular extension, loaded in apps.py)."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension

_FORMAT = "bh_<8-char id>_<32-char secret>_<6-char checksum>"


class APIKeyScheme(OpenApiAuthenticationExtension):
    target_class = "apikeys.auth.APIKeyAuthentication"
    name = ["apiKeyHeader", "bearerAuth"]

    def get_security_requirement(self, auto_schema):
        # Either header works: two alternatives (OR), not two requirements (AND).
        return [{"apiKeyHeader": []}, {"bearerAuth": []}]

    def get_security_definition(self, auto_schema):
        return [
            {
                "type": "apiKey",
                "in": "header",
                "name": "X-API-Key",
                "description": f"An API key ({_FORMAT}) created on the API keys page.",
            },
            {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": _FORMAT,
                "description": "The same API key as `Authorization: Bearer <key>`.",
            },
        ]
