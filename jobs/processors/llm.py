"""Any OpenAI-compatible chat-completions endpoint: OpenAI, vLLM, Ollama, LM Studio, llama.cpp, …"""

from __future__ import annotations

import re
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from batchhub import jsonsafe

from . import _httpclient as net
from .base import ParamsError, Processor, RetryableError, RowError, RowInput, RowResult

SERVICE = "The LLM endpoint"
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
COLUMN_NAME = r"^[^\s{}][^{}]{0,99}$"
# Param names that would carry a secret: refused with a pointer to the right place for it.
_SECRET_PARAM = re.compile(r"(?i)(^|_)(api_?key|key|secret|token|password|authorization|bearer)$")
_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n?(.*?)\n?\s*```\s*$", re.DOTALL)
_JSON_TYPES = ["string", "number", "integer", "boolean", "array", "object", "null"]


class LLMProcessor(Processor):
    name = "llm"
    title = "LLM (OpenAI-compatible)"
    description = (
        "Sends a prompt built from the row's columns to any OpenAI-compatible chat-completions "
        "endpoint (OpenAI, vLLM, Ollama, LM Studio, …) and stores the answer: as text in one "
        "column, or as a JSON object whose keys become columns (checked against your schema). "
        "The API key comes from an environment variable on the workers or from a credential you "
        "saved under Settings; it is never part of the job. Token usage is summed on the job. "
        "An image column is sent as an image_url part (vision models); a document column's PDF, "
        "page or text file is fetched and its text sent after the prompt."
    )
    inputs: list[str] = []  # the prompt template names the columns it uses
    outputs = ["answer"]
    io_bound = True
    params_schema = {
        "type": "object",
        "properties": {
            "base_url": {
                "type": "string",
                "title": "Base URL",
                "pattern": "^https?://[^\\s@]+$",
                "maxLength": 500,
                "default": "https://api.openai.com/v1",
                "description": "The API's base URL; the processor POSTs to "
                "{base_url}/chat/completions. "
                "E.g. http://localhost:11434/v1 for Ollama, http://localhost:8000/v1 for vLLM.",
            },
            "model": {
                "type": "string",
                "title": "Model",
                "minLength": 1,
                "maxLength": 200,
                "description": "The model name the endpoint expects, "
                "e.g. gpt-4o-mini or llama3.1:8b.",
            },
            "prompt": {
                "type": "string",
                "title": "Prompt",
                "minLength": 1,
                "maxLength": 100_000,
                "description": "The user message, with {column} placeholders filled from each row. "
                "Double braces for literal ones: {{ }}.",
            },
            "system": {
                "type": "string",
                "title": "System message",
                "maxLength": 100_000,
                "default": "",
                "description": "Optional system message (may use {column} placeholders too).",
            },
            "temperature": {
                "type": "number",
                "title": "Temperature",
                "minimum": 0,
                "maximum": 2,
                "description": "Sampling temperature; leave empty for the provider's default.",
            },
            "max_tokens": {
                "type": "integer",
                "title": "Max tokens",
                "minimum": 1,
                "maximum": 1_000_000,
                "description": "Upper bound on the answer's tokens; "
                "leave empty for the provider's default.",
            },
            "timeout": {
                "type": "number",
                "title": "Timeout (seconds)",
                "minimum": 0.1,
                "maximum": 600,
                "default": 60,
                "description": "Per request. A timeout is retried like a 5xx answer.",
            },
            "output_mode": {
                "type": "string",
                "title": "Output",
                "enum": ["text", "json"],
                "default": "text",
                "description": "text: the answer goes into one column. "
                "json: the answer must be a JSON object; "
                "its keys (from json_schema) become the output columns.",
            },
            "output_column": {
                "type": "string",
                "title": "Output column",
                "pattern": COLUMN_NAME,
                "default": "answer",
                "description": "Column for the answer in text mode.",
            },
            "json_schema": {
                "type": "object",
                "title": "JSON schema of the answer",
                "description": 'For json mode: {"type": "object", "properties": {"name": {"type": '
                '"string"}, …}, "required": [...]}. The properties become the output columns, in '
                "this order; an answer that does not match is a row error.",
                "properties": {
                    "type": {"const": "object"},
                    "properties": {
                        "type": "object",
                        "minProperties": 1,
                        "maxProperties": 100,
                        "propertyNames": {"pattern": COLUMN_NAME},
                        "additionalProperties": {
                            "type": "object",
                            "properties": {
                                "type": {
                                    "anyOf": [
                                        {"enum": _JSON_TYPES},
                                        {"type": "array", "items": {"enum": _JSON_TYPES}},
                                    ]
                                }
                            },
                        },
                    },
                    "required": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
                    "additionalProperties": {"type": "boolean"},
                    "description": {"type": "string"},
                },
                "required": ["properties"],
                "additionalProperties": False,
            },
            "image_column": {
                "type": "string",
                "title": "Image column",
                "pattern": COLUMN_NAME,
                "description": "A column holding an image URL (https:// or data:image/…): sent "
                "with the prompt as an image_url content part, for vision models.",
            },
            "document_column": {
                "type": "string",
                "title": "Document column",
                "pattern": COLUMN_NAME,
                "description": "A column holding the URL of a PDF, HTML page or text file: it is "
                "fetched (same address policy and limits as the document processor), and the "
                "text of its first pages is sent after the prompt.",
            },
            "document_max_pages": {
                "type": "integer",
                "title": "Document pages read",
                "minimum": 1,
                "maximum": 10_000,
                "default": 20,
                "description": "Text is taken from the first N pages of a PDF.",
            },
            "document_max_chars": {
                "type": "integer",
                "title": "Document characters sent",
                "minimum": 1,
                "maximum": 1_000_000,
                "default": 50_000,
                "description": "The document's text is cut to this many characters.",
            },
            "api_key_env": {
                "type": "string",
                "title": "API key environment variable",
                "pattern": ENV_NAME,
                "description": "Name of an environment variable on the workers "
                "holding the API key, e.g. OPENAI_API_KEY.",
            },
            "credential": {
                "type": "string",
                "title": "Saved credential",
                "pattern": "^[a-z0-9](?:[a-z0-9_-]{0,48}[a-z0-9])?$",
                "description": "Name of a provider credential saved under Settings → Provider "
                "credentials. Leave both this and api_key_env empty for endpoints without a key.",
            },
        },
        "required": ["model", "prompt"],
        "additionalProperties": False,
    }

    @classmethod
    def validate_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        if isinstance(params, dict):
            for key in params:
                if key not in cls.params_schema["properties"] and _SECRET_PARAM.search(str(key)):
                    raise ParamsError(
                        f"params.{key}: never put an API key in a job's params. Save it under "
                        "Settings → Provider credentials and name it in 'credential', or set an "
                        "environment variable on the workers and name it in 'api_key_env'.",
                        [{"param": str(key), "message": "secrets are not accepted in params"}],
                    )
        return super().validate_params(params)

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        net.check_template(params["prompt"], "prompt")
        net.check_template(params["system"], "system")
        if params.get("api_key_env") and params.get("credential"):
            raise ParamsError("params: give api_key_env or credential, not both.")
        if params["output_mode"] == "json":
            schema = params.get("json_schema")
            if not schema:
                raise ParamsError("params.json_schema: json output needs a schema with properties.")
            schema = {"type": "object", **schema}
            try:
                Draft202012Validator.check_schema(schema)
            except SchemaError as exc:
                raise ParamsError(f"params.json_schema: {exc.message}") from None
            unknown = [
                name for name in schema.get("required", []) if name not in schema["properties"]
            ]
            if unknown:
                raise ParamsError(
                    f"params.json_schema.required: {unknown[0]!r} is not in properties."
                )

    def __init__(self, params: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(params, **kwargs)
        p = self.params
        self.url = p["base_url"].rstrip("/") + "/chat/completions"
        self.prompt: str = p["prompt"]
        self.system: str = p["system"]
        self.fields = list(
            dict.fromkeys(
                net.check_template(self.prompt, "prompt")
                + net.check_template(self.system, "system")
            )
        )
        self.json_mode = p["output_mode"] == "json"
        self.schema = {"type": "object", **p["json_schema"]} if self.json_mode else None
        self.validator = Draft202012Validator(self.schema) if self.schema else None
        self.api_key, self.key_error = self._resolve_key()
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self.client = net.make_client(
            concurrency=self.context.concurrency, timeout=p["timeout"], headers=headers
        )
        # Documents come from other hosts: their own client, which never carries the API key.
        self.documents = (
            net.make_client(
                concurrency=self.context.concurrency,
                timeout=p["timeout"],
                follow_redirects=True,
                max_redirects=5,
                headers={"User-Agent": net.DEFAULT_USER_AGENT},
            )
            if p.get("document_column")
            else None
        )

    def check_destinations(self) -> None:
        net.check_destination(self.params["base_url"], "base_url")

    def credential_refs(self) -> dict[str, str]:
        name = self.params.get("credential")
        return {"credential": name} if name else {}

    def _resolve_key(self) -> tuple[str | None, str | None]:
        # Resolved once, in the thread that builds the processor: run_one's pool threads then
        # never touch the database.
        try:
            if self.params.get("api_key_env"):
                return net.env_value(self.params["api_key_env"], what="the LLM API key"), None
            if self.params.get("credential"):
                from jobs.credentials import CredentialError, get_secret

                try:
                    return get_secret(self.context.owner_id, self.params["credential"]), None
                except CredentialError as exc:
                    return None, str(exc)
        except RowError as exc:
            return None, str(exc)
        return None, None

    def output_columns(self) -> list[str]:
        if self.schema:
            return list(self.schema["properties"])
        return [self.params["output_column"]]

    def required_columns(self, column_map: dict[str, str]) -> list[str]:
        extra = [self.params.get("image_column"), self.params.get("document_column")]
        return list(dict.fromkeys([*self.fields, *(c for c in extra if c)]))

    def _messages(self, row: RowInput) -> list[dict[str, str]]:
        messages = []
        system = net.fill(self.system, row.values) if self.system else ""
        if self.schema:
            # OpenAI refuses json_object mode unless a message mentions JSON;
            # the keys help any model.
            keys = ", ".join(self.schema["properties"])
            system = (
                system + "\n\n" if system else ""
            ) + f"Answer with a JSON object with the keys: {keys}."
        if system:
            messages.append({"role": "system", "content": system})
        prompt = net.fill(self.prompt, row.values)
        parts = self._attachments(row)
        if parts:
            messages.append({"role": "user", "content": [{"type": "text", "text": prompt}, *parts]})
        else:
            messages.append({"role": "user", "content": prompt})
        return messages

    def _attachments(self, row: RowInput) -> list[dict[str, Any]]:
        """Content parts after the prompt: the row's document text, then its image."""
        parts: list[dict[str, Any]] = []
        p = self.params
        if p.get("document_column"):
            from .document import fetch_document

            doc = fetch_document(
                self.documents,
                row.values.get(p["document_column"]),
                max_bytes=20_000_000,
                max_pages=p["document_max_pages"],
                max_text_chars=p["document_max_chars"],
            )
            heading = f"Document: {doc['title']}" if doc["title"] else "Document:"
            parts.append({"type": "text", "text": f"{heading}\n{doc['text']}"})
        if p.get("image_column"):
            image = row.values.get(p["image_column"])
            image = image.strip() if isinstance(image, str) else ""
            if not image:
                raise RowError(f"The image column {p['image_column']!r} is empty.")
            if not re.match(r"(?i)^(https?://[^/?#\s]|data:image/[a-z0-9.+-]+;base64,)", image):
                raise RowError(
                    f"Not an image URL (http, https or data:image): {image[:200]}",
                    reason="Not an image URL (http, https or data:image)",
                )
            parts.append({"type": "image_url", "image_url": {"url": image}})
        return parts

    def process_row(self, row: RowInput) -> RowResult:
        if self.key_error:
            raise RowError(self.key_error)
        body: dict[str, Any] = {"model": self.params["model"], "messages": self._messages(row)}
        if "temperature" in self.params:
            body["temperature"] = self.params["temperature"]
        if "max_tokens" in self.params:
            body["max_tokens"] = self.params["max_tokens"]
        if self.json_mode:
            body["response_format"] = {"type": "json_object"}
        with net.transport_errors(SERVICE):
            response = self.client.post(self.url, json=body)
        net.check_response(response, service=SERVICE)
        try:
            data = response.json()
        except ValueError:
            raise RowError(f"{SERVICE} answered with something that is not JSON.") from None
        content = _content(data)
        usage = _usage(data)
        if not self.json_mode:
            return RowResult.ok({self.params["output_column"]: content}, usage=usage)
        answer = _parse_object(content)
        errors = sorted(self.validator.iter_errors(answer), key=lambda e: list(e.absolute_path))
        if errors:
            where = ".".join(str(p) for p in errors[0].absolute_path)
            # The schema's complaint quotes the model's value: the place is the reason.
            at = f"The model's JSON does not match the schema{' at ' + where if where else ''}"
            raise RowError(f"{at}: {errors[0].message}", reason=at)
        return RowResult.ok(
            {key: net.cell(answer.get(key)) for key in self.schema["properties"]}, usage=usage
        )

    def close(self) -> None:
        self.client.close()
        if self.documents is not None:
            self.documents.close()


def _content(data: Any) -> str:
    if not isinstance(data, dict):
        raise RowError(f"{SERVICE} answered with JSON that is not a chat completion.")
    if "error" in data and not data.get("choices"):
        # Some proxies and local servers report quota and overload errors in a 200 body.
        error = (
            data["error"] if isinstance(data["error"], dict) else {"message": str(data["error"])}
        )
        text = " ".join(str(error.get(k, "")) for k in ("type", "code", "message")).strip()
        # The type and code name the cause; the message often carries the request's own ids.
        kind = " ".join(str(error.get(k) or "") for k in ("type", "code")).strip()
        if re.search(r"(?i)rate.?limit|quota|too many requests", text):
            raise RetryableError(
                f"{SERVICE}: {text}",
                rate_limited=True,
                reason=f"{SERVICE}: {kind}" if kind else None,
            )
        if re.search(r"(?i)overload|unavailable|timeout", text):
            raise RetryableError(
                f"{SERVICE}: {text}", reason=f"{SERVICE}: {kind}" if kind else None
            )
        raise RowError(
            f"{SERVICE} answered with an error: {text or 'no message'}",
            reason=f"{SERVICE} answered with an error: {kind}" if kind else None,
        )
    try:
        message = data["choices"][0]["message"]
        content = message.get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        raise RowError(f"{SERVICE} answered without choices[0].message.") from None
    if content is None:
        refusal = message.get("refusal") if isinstance(message, dict) else None
        raise RowError(
            f"The model refused: {refusal}" if refusal else "The model's answer is empty.",
            reason="The model refused" if refusal else None,
        )
    if isinstance(content, list):  # content parts: join the text ones
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def _usage(data: dict[str, Any]) -> dict[str, int]:
    usage = data.get("usage")
    if not isinstance(usage, dict):
        return {}
    counted = {}
    for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = usage.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            counted[key] = value
    if "total_tokens" not in counted and {"prompt_tokens", "completion_tokens"} <= counted.keys():
        counted["total_tokens"] = counted["prompt_tokens"] + counted["completion_tokens"]
    return counted


def _parse_object(content: str) -> dict[str, Any]:
    text = content.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        value = jsonsafe.loads(text, replace_halves=True, unique_keys=False)
    except ValueError:
        # Chatty models wrap the object in a sentence: try the outermost braces before giving up.
        start, end = text.find("{"), text.rfind("}")
        try:
            value = (
                jsonsafe.loads(text[start : end + 1], replace_halves=True, unique_keys=False)
                if 0 <= start < end
                else None
            )
        except ValueError:
            value = None
        if value is None:
            raise RowError(
                f"The model's answer is not valid JSON: {_short(content)}",
                reason="The model's answer is not valid JSON",
            ) from None
    if not isinstance(value, dict):
        raise RowError(
            f"The model's answer is JSON but not an object: {_short(content)}",
            reason="The model's answer is JSON but not an object",
        )
    return value


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"
