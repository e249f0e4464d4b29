"""Forms of the new-job page: the upload, then NewJobForm (the job's settings, its processor's
params built from a JSON Schema, and the column map) as one form.

The forms shape what the browser sends; every rule about a job (params against the processor's
schema, the column map, limits, the webhook URL) is checked by jobs.services, whose errors
NewJobForm.add_errors puts back next to the fields they name.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from django import forms
from django.conf import settings

from batchhub import jsonsafe

from . import colmatch
from .models import MAX_RATE_LIMIT
from .processors import all_processors, get_processor_class

PARAM_PREFIX = "param"
MAP_PREFIX = "map"
# Strings allowed to be longer than this get a textarea (prompts, templates).
TEXTAREA_ABOVE = 300


class UploadForm(forms.Form):
    label_suffix = ""
    file = forms.FileField(
        label="CSV or JSONL file",
        help_text=(
            "Comma, semicolon, tab or pipe separated; UTF-8 or another common encoding; "
            "gzip is fine."
        ),
        widget=forms.ClearableFileInput(
            attrs={"accept": ".csv,.tsv,.txt,.jsonl,.ndjson,.gz,text/csv"}
        ),
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        limit = settings.BATCHHUB_MAX_UPLOAD_BYTES
        if upload.size > limit:
            raise forms.ValidationError(
                f"The file is {_size(upload.size)}; the limit is {_size(limit)}.",
                code="file_too_large",
            )
        if upload.size == 0:
            raise forms.ValidationError("The file is empty.", code="empty")
        kind = _binary_kind(upload)
        if kind:
            raise forms.ValidationError(
                f"This is {kind}, not a CSV or JSONL file, whatever its name says. "
                "Upload a text file with one row per line.",
                code="not_text",
            )
        return upload


# The first bytes of files people pick by mistake (gzip is welcome: the ingest unpacks it).
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"%PDF-", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive (or an Excel/Word file)"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Office document"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive"),
    (b"SQLite format 3\x00", "an SQLite database"),
)


def _binary_kind(upload: Any) -> str:
    """What a non-text file is, from its first bytes; "" when it may be text."""
    upload.seek(0)
    head = upload.read(16)
    upload.seek(0)
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return ""


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def processor_choices() -> list[tuple[str, str]]:
    return [(cls.name, cls.title or cls.name) for cls in all_processors()]


class JobForm(forms.Form):
    """Everything about a new job except its params and column map (built per processor)."""

    label_suffix = ""
    draft = forms.CharField(widget=forms.HiddenInput)
    name = forms.CharField(label="Job name", max_length=200, required=False)
    processor = forms.ChoiceField(label="Processor", choices=())
    id_column = forms.ChoiceField(
        label="Id column",
        required=False,
        help_text=(
            "A column whose values name each row in the results; by default rows are numbered."
        ),
    )
    webhook_url = forms.URLField(
        label="Webhook URL",
        required=False,
        max_length=1000,
        assume_scheme="https",
        help_text="Optional: BatchHub POSTs a signed event here when the job ends.",
    )
    concurrency = forms.IntegerField(
        label="Concurrency",
        min_value=1,
        required=False,
        help_text="Rows processed at the same time.",
    )
    rate_limit = forms.IntegerField(
        label="Rate limit (requests per minute)",
        min_value=1,
        max_value=MAX_RATE_LIMIT,
        required=False,
        help_text="Optional: a ceiling across all workers, for services with quotas.",
    )

    def __init__(self, *args: Any, columns: list[str] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.fields["processor"].choices = processor_choices()
        self.fields["id_column"].choices = [("", "(row number)"), *[(c, c) for c in columns or []]]
        self.fields["concurrency"].max_value = settings.BATCHHUB_MAX_CONCURRENCY
        self.fields["concurrency"].widget.attrs.update(max=settings.BATCHHUB_MAX_CONCURRENCY)
        self.fields["concurrency"].initial = settings.BATCHHUB_DEFAULT_CONCURRENCY
        self.fields["processor"].widget.attrs.update({"data-testid": "processor"})


class ColumnMapForm(forms.Form):
    """One select per processor input: which column feeds it, pre-set to the likeliest column."""

    label_suffix = ""

    def __init__(
        self,
        *args: Any,
        inputs: list[str],
        columns: list[str],
        preview: list[dict[str, Any]] | None = None,
        **kwargs: Any,
    ):
        kwargs.setdefault("prefix", MAP_PREFIX)
        super().__init__(*args, **kwargs)
        for name in inputs:
            same = name in columns
            blank = f"(the column “{name}”)" if same else "(choose a column)"
            guess, why = ("", "") if same else colmatch.best_column(name, columns, preview or [])
            self.fields[name] = forms.ChoiceField(
                label=f"Column for “{name}”",
                required=not same,
                choices=[("", blank), *[(c, c) for c in columns]],
                initial=name if same else guess,
                help_text=f"Picked for {why}; choose another if it is not the right one."
                if guess
                else "",
            )

    def column_map(self) -> dict[str, str]:
        return {name: value for name, value in self.cleaned_data.items() if value}


def _types(schema: dict[str, Any]) -> list[str]:
    kind = schema.get("type")
    if isinstance(kind, list):
        return [k for k in kind if k != "null"]
    return [kind] if kind else []


class ParamsForm(forms.Form):
    """A form generated from a processor's params JSON Schema (the top-level properties).

    string → text input or textarea, number / integer → number input, boolean → checkbox,
    enum → select, anything else (objects, arrays, unions) → a JSON textarea.
    """

    label_suffix = ""

    def __init__(self, *args: Any, schema: dict[str, Any], **kwargs: Any):
        kwargs.setdefault("prefix", PARAM_PREFIX)
        super().__init__(*args, **kwargs)
        self.schema = schema or {}
        required = set(self.schema.get("required", []))
        for name, prop in (self.schema.get("properties") or {}).items():
            if isinstance(prop, dict):
                self.fields[name] = _field_for(name, prop, name in required)

    def params(self) -> dict[str, Any]:
        """The cleaned values, leaving out empty optional ones so the schema's defaults apply."""
        out: dict[str, Any] = {}
        for name, value in self.cleaned_data.items():
            if value is None or value == "":
                continue
            out[name] = value
        return out


def _label(name: str, prop: dict[str, Any]) -> str:
    return str(prop.get("title") or name.replace("_", " ").capitalize())


class JSONTextField(forms.JSONField):
    """JSON typed by hand; an empty box means "not given" rather than null."""

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        if isinstance(value, str):
            try:
                jsonsafe.loads(value)  # the bounds; Django's own parse then gives its errors
            except jsonsafe.JSONLimitError as exc:
                raise forms.ValidationError(f"This JSON {exc.phrase()}.", code="invalid") from None
            except ValueError:
                pass
        return super().to_python(value)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, str):
            return value  # what the user typed, kept on an error
        return json.dumps(value, indent=2, ensure_ascii=False) if value is not None else ""


def _field_for(name: str, prop: dict[str, Any], required: bool) -> forms.Field:
    common: dict[str, Any] = {
        "label": _label(name, prop),
        "required": required,
        "help_text": prop.get("description", ""),
    }
    default = prop.get("default")
    types = _types(prop)
    if "enum" in prop and all(isinstance(v, (str, int, float)) for v in prop["enum"]):
        choices = [(str(v), str(v)) for v in prop["enum"]]
        if not required and default is None:
            choices.insert(0, ("", "(default)"))
        kind = types[0] if len(types) == 1 else "string"
        coerce = {"integer": int, "number": float}.get(kind, str)
        return forms.TypedChoiceField(
            choices=choices, coerce=coerce, empty_value=None, initial=default, **common
        )
    if types == ["boolean"]:
        common["required"] = False  # an unticked box is false, not missing
        return forms.BooleanField(initial=bool(default), **common)
    if types == ["integer"]:
        return forms.IntegerField(
            min_value=prop.get("minimum"), max_value=prop.get("maximum"), initial=default, **common
        )
    if types == ["number"]:
        return forms.FloatField(
            min_value=prop.get("minimum"), max_value=prop.get("maximum"), initial=default, **common
        )
    if types == ["string"]:
        max_length = prop.get("maxLength")
        long_text = max_length is None or max_length > TEXTAREA_ABOVE
        widget = forms.Textarea(attrs={"rows": 4}) if long_text else forms.TextInput()
        return forms.CharField(
            max_length=max_length,
            min_length=prop.get("minLength"),
            strip=False,  # a template's spacing is meaningful
            widget=widget,
            initial=default,
            empty_value="",
            **common,
        )
    # Objects, arrays and unions: JSON, checked against the schema by the service.
    common["help_text"] = (common["help_text"] + " " if common["help_text"] else "") + "JSON."
    return JSONTextField(
        widget=forms.Textarea(attrs={"rows": 5, "spellcheck": "false"}), initial=default, **common
    )


class Draft(Protocol):
    """What the new-job form reads of an upload waiting to become a job (a jobs.drafts.Draft)."""

    token: str
    filename: str
    report: dict[str, Any]

    @property
    def columns(self) -> list[str]: ...


def likeliest_processor(columns: list[str]) -> str:
    """A processor whose inputs the file already has; else the template processor."""
    names = [cls.name for cls in all_processors()]
    for cls in all_processors():
        if cls.inputs and all(i in columns for i in cls.inputs):
            return cls.name
    return "template" if "template" in names else (names[0] if names else "")


class NewJobForm:
    """The new-job page as one form: the job's settings, its processor's params and column map.

    Bound to a POST, it validates the three together and gives back what creation.create_job
    and run_sample take. Unbound, it shows ``initial`` values (a first view, "run again", or what
    was typed before another processor was picked) wherever they still fit.
    """

    def __init__(
        self,
        draft: Draft,
        processor: str,
        data: Any = None,
        *,
        initial: dict[str, Any] | None = None,
    ):
        self.draft = draft
        self.processor = processor or ""
        self.processor_class = get_processor_class(self.processor)
        cls = self.processor_class
        columns = draft.columns
        preview = list(draft.report.get("preview") or [])
        initial = {} if data is not None else dict(initial or {})
        self.job = JobForm(data, initial=initial, columns=columns)
        self.params = ParamsForm(
            data,
            schema=cls.params_schema if cls is not None else {},
            initial=_prefixed(initial, PARAM_PREFIX),
        )
        self.mapping = ColumnMapForm(
            data,
            inputs=list(cls.inputs) if cls is not None else [],
            columns=columns,
            preview=preview,
            initial=_prefixed(initial, MAP_PREFIX),
        )
        self.switched = False

    @classmethod
    def first_view(cls, draft: Draft, copy: dict[str, Any] | None = None) -> NewJobForm:
        """The form a draft opens with: ``copy`` is an earlier job's settings ("run again")."""
        if copy is not None:
            return cls(draft, copy["processor"], initial={"draft": draft.token, **copy})
        processor = likeliest_processor(draft.columns)
        return cls(
            draft,
            processor,
            initial={"draft": draft.token, "processor": processor, "name": draft.filename},
        )

    @classmethod
    def from_post(cls, draft: Draft, post: Any) -> NewJobForm:
        """Bound, unless the page asked to update itself or its params were for another processor:
        then it is redrawn for the chosen processor with what was typed (``switched`` says which).
        """
        processor = post.get("processor", "")
        switched = post.get("params_for", processor) != processor
        if switched or post.get("action") == "update":
            form = cls(draft, processor, initial=post.dict())
            form.switched = switched
            return form
        return cls(draft, processor, post)

    @property
    def is_bound(self) -> bool:
        return self.job.is_bound

    def is_valid(self) -> bool:
        # No short cut: every form runs, so every field in error is marked at once.
        return self.job.is_valid() & self.params.is_valid() & self.mapping.is_valid()

    def job_arguments(self) -> dict[str, Any]:
        """creation.create_job's keyword arguments (after is_valid)."""
        data = self.job.cleaned_data
        return {
            "processor": self.processor,
            "params": self.params.params(),
            "name": data.get("name") or self.draft.filename,
            "id_column": data.get("id_column") or None,
            "column_map": self.mapping.column_map(),
            "webhook_url": data.get("webhook_url") or None,
            "concurrency": data.get("concurrency"),
            "rate_limit": data.get("rate_limit"),
        }

    def sample_arguments(self) -> dict[str, Any]:
        """run_sample's processor, params and column map (after is_valid)."""
        return {
            "processor_name": self.processor,
            "params": self.params.params(),
            "column_map": self.mapping.column_map(),
        }

    @property
    def concurrency(self) -> int:
        chosen = self.job.cleaned_data.get("concurrency") if self.is_bound else None
        return chosen or settings.BATCHHUB_DEFAULT_CONCURRENCY

    def sample_columns(self) -> list[str]:
        """The input columns worth showing beside a sample's outputs: the ones the processor
        reads (after is_valid)."""
        columns = self.draft.columns
        cls = self.processor_class
        if cls is None or not cls.inputs:
            return columns
        used = [self.mapping.cleaned_data.get(name) or name for name in cls.inputs]
        return [c for c in columns if c in used] or columns

    def field_errors(self) -> list[dict[str, str]]:
        """Each field in error as {id, label, message}, to link to it from the page's message."""
        if not self.is_bound:
            return []
        out = []
        for form in (self.job, self.params, self.mapping):
            for name, errors in form.errors.items():
                if name in form.fields:
                    field = form[name]
                    out.append(
                        {"id": field.id_for_label, "label": field.label, "message": errors[0]}
                    )
        return out

    def add_errors(self, details: Any) -> list[str]:
        """Put a service error's details next to the fields they name (after is_valid); return
        the messages that fit no field."""
        loose: list[str] = []
        if not isinstance(details, dict):
            return loose
        for key, value in details.items():
            items = value if isinstance(value, list) else [value]
            if key == "params":
                for item in items:
                    field, message = _param_error(item)
                    if field in self.params.fields:
                        _add(self.params, field, message)
                    else:
                        loose.append(message)
            elif key == "column_map":
                for item in items:
                    if str(item) in self.mapping.fields:
                        _add(self.mapping, str(item), "This is not an input of the processor.")
            elif key in self.job.fields and key != "draft":
                for item in items:
                    if isinstance(item, str):
                        _add(self.job, key, item)
        return loose


def _prefixed(values: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The values of one sub-form's fields (``param-prompt`` → ``prompt``), empty ones left out."""
    start = f"{prefix}-"
    return {
        key[len(start) :]: value
        for key, value in values.items()
        if key.startswith(start) and value not in (None, "")
    }


def _param_error(item: Any) -> tuple[str, str]:
    """("field", "message") from {"param", "message"} or from the text "params.field: message"."""
    if isinstance(item, dict):
        return str(item.get("param", "")).split(".", 1)[0], str(item.get("message", ""))
    text = str(item)
    if text.startswith("params.") and ": " in text:
        path, message = text[len("params.") :].split(": ", 1)
        return path.split(".", 1)[0], message
    return "", text


def _add(form: forms.Form, field: str, message: str) -> None:
    if message not in form.errors.get(field, []):
        form.add_error(field, message)
