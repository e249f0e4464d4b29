from __future__ import annotations

import json
import logging
import re
import string
from operator import itemgetter
from typing import Any

from django.conf import settings

from .base import ParamsError, Processor, RowError, RowInput, RowResult

_FORMATTER = string.Formatter()
logger = logging.getLogger(__name__)

# A width or precision pads a value to that many characters: a template of a few bytes could
# otherwise make every row's output a gigabyte and take the worker's memory with it.
MAX_SPEC_NUMBER = 1000
_DIGITS = re.compile(r"\d+")


# Cells filled in as they are: a number keeps its type, so that `{price:.2f}` formats it.
_AS_IS = frozenset({str, int, float})


def _cell_text(value: Any) -> Any:
    """A cell as the template fills it: what a JSONL row holds spelled as JSON spells it (true,
    {"a":1}), as the `llm` and `http` templates do, never Python's True or {'a': 1}."""
    if value is None:
        return ""
    if type(value) in _AS_IS:
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _check_spec(field_name: str, format_spec: str) -> None:
    for digits in _DIGITS.findall(format_spec):
        digits = digits.lstrip("0")
        if len(digits) > len(str(MAX_SPEC_NUMBER)) or int(digits or 0) > MAX_SPEC_NUMBER:
            raise ParamsError(
                f"params.template: {{{field_name}:{format_spec}}} pads to more than "
                f"{MAX_SPEC_NUMBER} characters; use a smaller width or precision."
            )


def template_fields(template: str) -> list[str]:
    """The column names a template uses; refuses anything but plain names.

    str.format would follow attribute and index access ({x.__class__}, {x[0]}) into Python
    objects; a template here may only name columns.
    """
    names: list[str] = []
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as exc:
        raise ParamsError(f"params.template: {exc}") from None
    for _literal, field_name, format_spec, conversion in parsed:
        if field_name is None:
            continue
        if field_name == "" or field_name.isdigit():
            raise ParamsError("params.template: name a column inside braces, e.g. {first_name}.")
        if any(ch in field_name for ch in ".[]"):
            raise ParamsError(
                f"params.template: {{{field_name}}} uses attribute or index access; "
                "only column names are allowed."
            )
        if conversion or (format_spec and "{" in format_spec):
            raise ParamsError(
                f"params.template: {{{field_name}}} uses a conversion or a nested field."
            )
        if format_spec:
            _check_spec(field_name, format_spec)
        if field_name not in names:
            names.append(field_name)
    return names


def repeated_fields(template: str) -> dict[str, int]:
    """Columns a (checked) template uses more than once, with how many times.

    A column used once adds at most its own cell to the output; one used a thousand times
    multiplies it, so only these need measuring row by row."""
    counts: dict[str, int] = {}
    for _literal, field_name, _spec, _conversion in _FORMATTER.parse(template):
        if field_name is not None:
            counts[field_name] = counts.get(field_name, 0) + 1
    return {name: n for name, n in counts.items() if n > 1}


def check_filled_size(repeats: dict[str, int], text_of) -> None:
    """Fail the row before filling a template whose repeated columns would make it longer than
    the longest input line may be; `text_of(name)` is the text a column fills in."""
    limit = settings.BATCHHUB_MAX_ROW_BYTES
    sizes = {name: len(text_of(name)) * n for name, n in repeats.items()}
    size = sum(sizes.values())
    if size > limit:
        worst = max(sizes, key=sizes.__getitem__)
        raise RowError(
            f"The filled template would be {size:,} characters long, more than the "
            f"{limit:,} an output may hold: column {worst!r} is used {repeats[worst]} times."
        )


class TemplateProcessor(Processor):
    name = "template"
    title = "Template"
    description = (
        "Fills an output column from a template over the row's columns, e.g. "
        "'{first} {last} <{email}>'. Only column names in braces; no code runs."
    )
    inputs: list[str] = []
    outputs = ["text"]
    params_schema = {
        "type": "object",
        "properties": {
            "template": {
                "type": "string",
                "minLength": 1,
                "maxLength": 10000,
                "description": "Text with {column} placeholders. "
                "Double the braces for literal ones: {{ }}.",
            },
            "output_column": {
                "type": "string",
                "minLength": 1,
                "maxLength": 100,
                "default": "text",
                "description": "Name of the output column.",
            },
        },
        "required": ["template"],
        "additionalProperties": False,
    }

    @classmethod
    def check_params(cls, params: dict[str, Any]) -> None:
        template_fields(params["template"])

    def __init__(self, params: dict[str, Any] | None = None, **kwargs: Any):
        super().__init__(params, **kwargs)
        self.template: str = self.params["template"]
        self.output_column: str = self.params["output_column"]
        self.fields = template_fields(self.template)
        self._repeats = repeated_fields(self.template)

    def output_columns(self) -> list[str]:
        return [self.output_column]

    def required_columns(self, column_map: dict[str, str]) -> list[str]:
        return list(self.fields)

    def process_row(self, row: RowInput) -> dict[str, Any]:
        get = row.values.get
        values = {name: _cell_text(get(name)) for name in self.fields}
        if self._repeats:
            check_filled_size(self._repeats, lambda name: str(values[name]))
        try:
            return {self.output_column: self.template.format_map(values)}
        except (ValueError, TypeError) as exc:
            raise RowError(f"The template could not be filled: {exc}") from None

    # Positional rows: the template is compiled once per job's columns into a format string with
    # numbered fields, so a row is one str.format over a tuple of its values, with no dicts.
    def bind_columns(self, columns: list[str]) -> None:
        # The last column of a name wins, as in the dict process_row sees; a row shorter than the
        # columns has only the earlier ones, so its last present column of that name wins.
        where = {name: i for i, name in enumerate(columns)}
        slots: list[int | None] = [where.get(name) for name in self.fields]
        self._candidates = [
            [i for i in range(len(columns) - 1, -1, -1) if columns[i] == name]
            for name in self.fields
        ]
        parts: list[str] = []
        for literal, field_name, format_spec, _conversion in _FORMATTER.parse(self.template):
            parts.append(literal.replace("{", "{{").replace("}", "}}"))
            if field_name is not None:
                number = self.fields.index(field_name)
                parts.append(f"{{{number}:{format_spec}}}" if format_spec else f"{{{number}}}")
        self._format = "".join(parts).format
        # Rows at least this long hold every field's column (shorter rows lack the later ones).
        self._min_len = max(slots) + 1 if slots and None not in slots else (1 << 62 if slots else 0)
        self._getter = _getter([i for i in slots if i is not None]) if slots else None

    def process_values(self, values: list[Any]) -> RowResult:
        try:
            if len(values) >= self._min_len:
                args = self._getter(values) if self._getter is not None else ()
                if not _AS_IS.issuperset(map(type, args)):
                    args = [_cell_text(v) for v in args]
            else:
                n = len(values)
                args = [_last_present(values, n, where) for where in self._candidates]
            if self._repeats:
                check_filled_size(self._repeats, lambda name: str(args[self.fields.index(name)]))
            return RowResult(output={self.output_column: self._format(*args)})
        except (ValueError, TypeError) as exc:
            return RowResult(error=f"The template could not be filled: {exc}")
        except RowError as exc:
            return RowResult(error=str(exc), reason=exc.reason)
        except Exception as exc:  # as run_one: a bug fails the row, not the worker loop
            logger.exception("processor %s raised on a row", self.name)
            return RowResult(error=f"{exc.__class__.__name__}: {exc}")


def _last_present(values: list[Any], n: int, candidates: list[int]) -> Any:
    for i in candidates:
        if i < n:
            return _cell_text(values[i])
    return ""


def _getter(indexes: list[int]):
    """A C-level picker of these indexes that always returns a tuple."""
    if len(indexes) == 1:
        (only,) = indexes
        return lambda values: (values[only],)
    return itemgetter(*indexes)
