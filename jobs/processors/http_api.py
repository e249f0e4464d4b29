"""Call any HTTP API once per row (named http_api so it does not shadow the stdlib's http)."""

from __future__ import annotations

import json
import re
from typing import Any

from . import _httpclient as net
from .base import ParamsError, Processor, RowError, RowInput

SERVICE = "The API"
_HEADER_NAME = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$"
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
_CREDENTIAL_NAME = "^[a-z0-9](?:[a-z0-9_-]{0,48}[a-z0-9])?$"
_PATH = r"^[^.\s]+(\.[^.\s]+)*$"
_COLUMN_NAME = r"^[^\s{}][^{}]{0,99}$"


class HTTPProcessor(Processor):
    name = "http"
    title = "HTTP API call"
    description = (
        "Calls an HTTP API once per row: the URL, headers and JSON body are templates over the "
        "row's columns. Chosen fields of the JSON answer (dotted paths such as data.items.0.name) "
        "become output columns; without fields, the status code and the body are stored. A 4xx "
        "answer fails the row; 429 and 5xx are retried, honouring Retry-After."
    )
    inputs: list[str] = []  # the templates name the columns they use
    outputs = ["status_code", "body"]
    io_bound = True
    params_schema = {
        "type": "object",
        "properties": {
            "method": {
                "type": "string",
                "title": "Method",
                "enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"],
                "default": "GET",
                "description": "The HTTP method.",
            },
            "url": {
                "type": "string",
                "title": "URL",
                "minLength": 3,
                "maxLength": 4000,
                "description": "URL template, e.g. "
                "https://api.example.com/users/{user_id}?q={query}. "
                "Placeholders are URL-encoded unless url_encode is off.",
            },
            "url_encode": {
                "type": "boolean",
                "title": "URL-encode placeholders",
                "default": True,
                "description": "Turn off when a column holds a whole URL or path, "
                "e.g. url = {link}.",
            },
            "headers": {
                "type": "object",
                "title": "Headers",
                "default": {},
                "maxProperties": 50,
                "propertyNames": {"pattern": _HEADER_NAME},
                "additionalProperties": {
                    "anyOf": [
                        {"type": "string", "maxLength": 8000},
                        {
                            "type": "object",
                            "properties": {"$env": {"type": "string", "pattern": _ENV_NAME}},
                            "required": ["$env"],
                            "additionalProperties": False,
                        },
                        {
                            "type": "object",
                            "properties": {
                                "$credential": {"type": "string", "pattern": _CREDENTIAL_NAME}
                            },
                            "required": ["$credential"],
                            "additionalProperties": False,
                        },
                    ]
                },
                "description": "Header name → value template. Keep secrets out of the job: "
                '{"$env": "NAME"} reads an environment variable on the workers, '
                '{"$credential": "name"} one of your saved provider credentials '
                "(a value of the form 'Bearer …' is up to you to store whole).",
            },
            "body": {
                "type": ["object", "array", "null"],
                "title": "JSON body",
                "default": None,
                "description": "A JSON value sent as the request body; its strings are templates. "
                "A string that is exactly one placeholder keeps the cell's type: "
                '{"n": "{count}"}.',
            },
            "timeout": {
                "type": "number",
                "title": "Timeout (seconds)",
                "minimum": 0.1,
                "maximum": 600,
                "default": 30,
                "description": "Per request; a timeout is retried.",
            },
            "fields": {
                "type": "object",
                "title": "Output fields",
                "default": {},
                "maxProperties": 100,
                "propertyNames": {"pattern": _COLUMN_NAME},
                "additionalProperties": {"type": "string", "pattern": _PATH, "maxLength": 500},
                "description": "Output column → dotted path into the JSON answer, e.g. "
                '{"name": "data.items.0.name"}. Empty: status_code and body are stored.',
            },
            "max_body_chars": {
                "type": "integer",
                "title": "Body characters kept",
                "minimum": 0,
                "maximum": 1_000_000,
                "default": 10_000,
                "description": "Without fields, the body column is cut to this many characters.",
            },
        },
        "required": ["url"],
        "additionalProperties": False,
    }

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        url = params["url"]
        # "{link}" (a whole URL from a column) is allowed unencoded; each filled URL is checked
        # per row.
        whole_url_column = (
            url.startswith("{") and not url.startswith("{{") and not params["url_encode"]
        )
        if not (re.match(r"(?i)^https?://", url) or whole_url_column):
            raise ParamsError(
                "params.url: must start with http:// or https:// "
                "(or be a column such as {link} with url_encode off)."
            )
        net.check_template(url, "url")
        for name, value in params["headers"].items():
            if isinstance(value, str):
                net.check_template(value, f"headers.{name}")
        for text in net.json_template_strings(params["body"]):
            net.check_template(text, "body")
        if params["method"] in ("GET", "HEAD") and params["body"] is not None:
            raise ParamsError(f"params.body: a {params['method']} request has no body.")

    def __init__(self, params: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(params, **kwargs)
        p = self.params
        self.fields_used = list(
            dict.fromkeys(
                net.template_fields(p["url"])
                + [
                    f
                    for v in p["headers"].values()
                    if isinstance(v, str)
                    for f in net.template_fields(v)
                ]
                + [
                    f
                    for text in net.json_template_strings(p["body"])
                    for f in net.template_fields(text)
                ]
            )
        )
        self.static_headers, self.header_error = self._resolve_headers()
        self.client = net.make_client(concurrency=self.context.concurrency, timeout=p["timeout"])

    def check_destinations(self) -> None:
        net.check_destination(self.params["url"], "url")

    def credential_refs(self) -> dict[str, str]:
        return {
            f"headers.{name}": value["$credential"]
            for name, value in self.params["headers"].items()
            if isinstance(value, dict) and "$credential" in value
        }

    def _resolve_headers(self) -> tuple[dict[str, str], str | None]:
        # Secrets are read once here, in the thread that builds the processor, never per row.
        resolved: dict[str, str] = {}
        for name, value in self.params["headers"].items():
            if isinstance(value, str):
                continue
            try:
                if "$env" in value:
                    resolved[name] = net.env_value(value["$env"], what=f"header {name}")
                else:
                    from jobs.credentials import CredentialError, get_secret

                    try:
                        resolved[name] = get_secret(self.context.owner_id, value["$credential"])
                    except CredentialError as exc:
                        return {}, str(exc)
            except RowError as exc:
                return {}, str(exc)
        return resolved, None

    def output_columns(self) -> list[str]:
        return list(self.params["fields"]) or list(self.outputs)

    def required_columns(self, column_map: dict[str, str]) -> list[str]:
        return list(self.fields_used)

    def process_row(self, row: RowInput) -> dict[str, Any]:
        if self.header_error:
            raise RowError(self.header_error)
        p = self.params
        url = net.fill(p["url"], row.values, url_encode=p["url_encode"])
        if not re.match(r"(?i)^https?://[^/?#\s]", url):
            raise RowError(
                f"The URL is not an http(s) URL: {url[:200]}",
                reason="The URL is not an http(s) URL",
            )
        headers = dict(self.static_headers)
        for name, value in p["headers"].items():
            if isinstance(value, str):
                filled = net.fill(value, row.values)
                if any(ch in filled for ch in "\r\n"):
                    raise RowError(f"The header {name} would contain a line break.")
                if not filled.isascii():
                    raise RowError(
                        f"The header {name} would contain non-ASCII characters; "
                        "HTTP headers are ASCII."
                    )
                headers[name] = filled
        kwargs: dict[str, Any] = {"headers": headers}
        if p["body"] is not None:
            kwargs["json"] = net.fill_json(p["body"], row.values)
        with net.transport_errors(SERVICE):
            response = self.client.request(p["method"], url, **kwargs)
        net.check_response(response, service=SERVICE)
        if not p["fields"]:
            body = response.text
            limit = p["max_body_chars"]
            return {"status_code": response.status_code, "body": body[:limit]}
        try:
            data = response.json()
        except (ValueError, json.JSONDecodeError):
            raise RowError(
                f"{SERVICE} answered {response.status_code} with a body that is not JSON, "
                "so no field can be read."
            ) from None
        return {
            column: net.cell(net.dotted_get(data, path)) for column, path in p["fields"].items()
        }

    def close(self) -> None:
        self.client.close()
