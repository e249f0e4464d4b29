from __future__ import annotations

import string
from typing import Any

from .base import ParamsError, Processor, RowError, RowInput

_FORMATTER = string.Formatter()


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
        if field_name not in names:
            names.append(field_name)
    return names


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

    def output_columns(self) -> list[str]:
        return [self.output_column]

    def required_columns(self, column_map: dict[str, str]) -> list[str]:
        return list(self.fields)

    def process_row(self, row: RowInput) -> dict[str, Any]:
        get = row.values.get
        values = {name: ("" if (value := get(name)) is None else value) for name in self.fields}
        try:
            return {self.output_column: self.template.format_map(values)}
        except (ValueError, TypeError) as exc:
            raise RowError(f"The template could not be filled: {exc}") from None
