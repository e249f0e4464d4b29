"""The OpenAPI schema view: drf-spectacular's, with `?format=json|yaml` honoured.

The project turns DRF's URL format override off (`format` is the results download's own
parameter), so this one view reads `?format=` itself; without it, content negotiation on
`Accept` decides and YAML is the default, as drf-spectacular serves it.
"""

from __future__ import annotations

from drf_spectacular.renderers import (
    OpenApiJsonRenderer,
    OpenApiJsonRenderer2,
    OpenApiYamlRenderer,
    OpenApiYamlRenderer2,
)
from drf_spectacular.utils import extend_schema
from drf_spectacular.views import SpectacularAPIView

from .api import APIError

FORMATS = ("json", "yaml")


class SchemaView(SpectacularAPIView):
    # application/json before the vendor type: `?format=json` with any Accept is plain JSON.
    renderer_classes = [
        OpenApiYamlRenderer,
        OpenApiYamlRenderer2,
        OpenApiJsonRenderer2,
        OpenApiJsonRenderer,
    ]

    unknown_format: str | None = None

    def get_format_suffix(self, **kwargs):
        wanted = self.request.query_params.get("format")
        if wanted is None:
            return super().get_format_suffix(**kwargs)
        if wanted not in FORMATS:
            # Refused in get(), once negotiation has picked JSON for the error body.
            self.unknown_format = wanted
            return "json"
        return wanted

    @extend_schema(exclude=True)  # as the view it extends: the schema is not in itself
    def get(self, request, *args, **kwargs):
        if self.unknown_format is not None:
            raise APIError(
                f"Unknown schema format '{self.unknown_format}'; use json or yaml.",
                details={"format": list(FORMATS)},
            )
        return super().get(request, *args, **kwargs)
